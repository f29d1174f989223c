"""Where capsearch keeps what it generates.

Everything lives under one artifacts root, chosen in this order (:func:`artifacts_home` says which and why):

1. ``$CAPSEARCH_ARTIFACTS`` when set;
2. inside a capsearch checkout (the current folder or one above it holds a ``pyproject.toml`` whose
   ``[project]`` table is named ``capsearch``), the checkout's ``artifacts/`` folder: developers and the
   benchmarks keep their results beside the code, wherever in the tree a command runs. A folder that
   merely holds an ``artifacts/`` subfolder is not a marker: any project may have one;
3. otherwise the platform's user data folder (``platformdirs``: ``~/.local/share/capsearch`` on Linux,
   ``~/Library/Application Support/capsearch`` on macOS), so that ``capsearch search`` finds the same
   datasets, models and libraries from any directory.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from platformdirs import user_data_path

ENV_VAR = "CAPSEARCH_ARTIFACTS"
PROJECT_NAME = "capsearch"
APP_NAME = "capsearch"

Reason = Literal["env", "checkout", "user-data"]


@dataclass(frozen=True)
class ArtifactsHome:
    """The artifacts root in use and why it was chosen."""

    root: Path
    reason: Reason

    def describe(self) -> str:
        """A one-line account of the choice, for ``capsearch where``."""
        if self.reason == "env":
            return f"${ENV_VAR} is set"
        if self.reason == "checkout":
            return f"run inside the capsearch checkout {self.root.parent}"
        return f"the user data folder (no ${ENV_VAR}, not inside a capsearch checkout)"


def is_capsearch_project(folder: Path) -> bool:
    """True when ``folder/pyproject.toml`` declares the ``capsearch`` project."""
    try:
        with open(folder / "pyproject.toml", "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return False
    project = data.get("project")
    return isinstance(project, dict) and project.get("name") == PROJECT_NAME


def project_checkout(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: the current folder) holding this project."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if is_capsearch_project(folder):
            return folder
    return None


def user_data_root() -> Path:
    """The platform's per-user data folder for capsearch (not created)."""
    return user_data_path(APP_NAME, appauthor=False)


def artifacts_home() -> ArtifactsHome:
    """The artifacts root and the reason it is the one in use (nothing is created)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return ArtifactsHome(Path(env).expanduser().resolve(), "env")
    checkout = project_checkout()
    if checkout is not None:
        return ArtifactsHome(checkout / "artifacts", "checkout")
    return ArtifactsHome(user_data_root().resolve(), "user-data")


def artifacts_root() -> Path:
    """The artifacts root (not created)."""
    return artifacts_home().root


def datasets_dir() -> Path:
    return artifacts_root() / "datasets"


def models_dir() -> Path:
    return artifacts_root() / "models"


def embeddings_dir() -> Path:
    return artifacts_root() / "embeddings"


def indexes_dir() -> Path:
    return artifacts_root() / "indexes"


def libraries_dir() -> Path:
    return artifacts_root() / "libraries"


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
