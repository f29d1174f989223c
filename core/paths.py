"""Where capsearch keeps what it generates.

Everything lives under one artifacts root: ``$CAPSEARCH_ARTIFACTS`` when set, else ``./artifacts``.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "CAPSEARCH_ARTIFACTS"


def artifacts_root() -> Path:
    """The artifacts root (not created)."""
    return Path(os.environ.get(ENV_VAR) or Path.cwd() / "artifacts").resolve()


def datasets_dir() -> Path:
    return artifacts_root() / "datasets"


def models_dir() -> Path:
    return artifacts_root() / "models"


def embeddings_dir() -> Path:
    return artifacts_root() / "embeddings"


def indexes_dir() -> Path:
    return artifacts_root() / "indexes"


def results_dir() -> Path:
    return artifacts_root() / "results"


def reports_dir() -> Path:
    return artifacts_root() / "reports"


def split_folder(split: str, precision: str = "fp32") -> str:
    """The folder of a split's embeddings or indexes: ``test`` in fp32, ``test.bf16`` in bf16, and so on,
    so that each inference precision keeps its own caches."""
    return split if precision == "fp32" else f"{split}.{precision}"


def safe_name(text: str) -> str:
    """A file-system-safe rendering of a model id or dataset name (``ViT-B-32@openai`` -> ``ViT-B-32_openai``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._") or "_"
