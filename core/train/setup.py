"""The model a training run starts from: an open_clip module, its config dict and its tokenizer.

A capsearch config name (core/models/configs) starts from seeded random weights, with a pretrained Hugging
Face text tower loaded from local files; anything else (a checkpoint dir, a dir under models/, an open_clip
name with a pretrained tag or weights file) is loaded through :func:`core.models.loading.load_model`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

from core.models.catalogue import CONFIG_DIR, is_checkpoint_dir
from core.models.checkpoint import ClipModel, build_model, make_tokenizer
from core.paths import models_dir


@dataclass
class StartModel:
    """What training starts from (``start_id`` is the model id of the starting weights)."""

    model: ClipModel
    model_cfg: dict[str, Any]
    tokenizer: Callable[..., torch.Tensor]
    start_id: str


def local_config(name: str) -> dict[str, Any] | None:
    """The capsearch config ``name`` from core/models/configs, or None."""
    path = CONFIG_DIR / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def start_model(
    name: str, pretrained: str | None = None, device: str | torch.device = "cpu", seed: int = 0
) -> StartModel:
    """The starting point of a run (see the module docstring)."""
    cfg = local_config(name) if pretrained is None else None
    if cfg is not None:
        torch.manual_seed(seed)
        model = build_model(cfg, pretrained_text=True).to(device)
        return StartModel(model, cfg, make_tokenizer(cfg), f"{name}@random")
    from core.models.checkpoint import read_checkpoint_meta
    from core.models.loading import load_model

    lm = load_model(name, pretrained=pretrained, device=str(device))
    folder = next((p for p in (Path(name).expanduser(), models_dir() / name) if is_checkpoint_dir(p)), None)
    cfg = read_checkpoint_meta(folder)["model_cfg"] if folder else open_clip.get_model_config(name)
    return StartModel(lm.model, cfg, lm.tokenizer, lm.model_id)
