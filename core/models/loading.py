"""Load a model by open_clip name (+ pretrained tag or weights file), checkpoint dir, or saved model name.

Every loaded model carries a stable ``model_id`` that keys caches, indexes and results:
``<name>@random`` (seeded random init), ``<name>@<tag>`` (open_clip pretrained tag),
``<name>@<sha256[:12] of the weights file>`` (a local file, or a capsearch checkpoint dir).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from core.errors import ModelError, WeightsUnavailableError
from core.models.catalogue import builtin_configs, is_checkpoint_dir, list_checkpoints
from core.models.checkpoint import (
    ClipModel,
    Tokenizer,
    build_model,
    file_sha256,
    load_checkpoint_dir,
    load_weights,
    make_preprocess,
    make_tokenizer,
    quiet_open_clip,
    read_state_dict,
)
from core.models.device import DTYPES, Format, resolve_device, resolve_precision
from core.models.towers import towers_suffix
from core.paths import models_dir

RANDOM_SEED = 0
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


@dataclass
class LoadedModel:
    """A model ready for inference and everything needed to feed it."""

    name: str
    pretrained: str | None
    model_id: str
    model: ClipModel
    preprocess: Callable[..., torch.Tensor]
    tokenizer: Tokenizer
    device: torch.device
    embed_dim: int
    context_length: int
    precision: Format = "fp32"

    @property
    def dtype(self) -> torch.dtype:
        """The number format the embedding engine runs the towers in (the model itself stays fp32)."""
        return DTYPES[self.precision]


def _ways_out(name: str) -> str:
    return (
        "go online once so open_clip can download and cache the weights; or pass --pretrained PATH to a "
        f"local weights file for {name}; or use a built-in model without pretrained weights "
        "(e.g. capsearch-tiny, or omit --pretrained for a seeded random init)"
    )


def _checkpoint_dir(name: str) -> Path | None:
    """The checkpoint dir ``name`` points at (a path, or a dir under models/), else None."""
    for candidate in (Path(name).expanduser(), models_dir() / name):
        if is_checkpoint_dir(candidate):
            return candidate.resolve()
    path = Path(name).expanduser()
    if path.is_dir():
        raise ModelError(f"{path} is not a capsearch checkpoint (no model.json in it)")
    if path.is_file():
        raise ModelError(
            f"{name} is a file, not a model name or checkpoint dir",
            hint=f"to load a weights file, name its architecture: --model ViT-B-32 --pretrained {name}",
        )
    return None


def _check_name(name: str) -> None:
    known = open_clip.list_models()
    if name in known:
        return
    saved = [p.name for p in list_checkpoints()]
    close = difflib.get_close_matches(name, known + saved, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ModelError(
        f"unknown model {name!r}: not an open_clip model name, a checkpoint dir, or a saved model",
        hint=hint
        + "built-in: capsearch-tiny; any open_clip name such as ViT-B-32; a checkpoint dir path"
        + (f"; saved: {', '.join(saved)}" if saved else ""),
    )


def _is_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.endswith(WEIGHT_SUFFIXES) or Path(pretrained).exists()


def _seeded_model(cfg: dict[str, Any]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return build_model(cfg)


def _download_tag(name: str, tag: str) -> None:
    """Make sure open_clip's weights for ``tag`` are cached; unavailable → WeightsUnavailableError."""
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg.get("hf_hub") and os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        cached = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg.get("url", ""))
        if not cached.is_file():
            raise WeightsUnavailableError(
                f"pretrained weights {name}@{tag} are not cached and this session is offline (HF_HUB_OFFLINE)",
                hint=_ways_out(name),
            )
    try:
        with quiet_open_clip():
            open_clip.download_pretrained(cfg)
    except Exception as exc:  # any hub / network / cache failure means the same thing here
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsUnavailableError(
            f"pretrained weights {name}@{tag} are not available here ({reason[:200]})", hint=_ways_out(name)
        ) from exc


def _from_tag(name: str, tag: str) -> tuple[nn.Module, Callable[..., torch.Tensor]]:
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        raise ModelError(
            f"{name} has no pretrained tag {tag!r}",
            hint=(f"its tags: {', '.join(tags)}; " if tags else f"{name} has no pretrained tags; ")
            + "or pass a local weights file path, or omit --pretrained for random init",
        )
    _download_tag(name, tag)
    try:
        with quiet_open_clip():
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag)
    except Exception as exc:  # a corrupt cached file, a hub hiccup: the weights cannot be had
        raise WeightsUnavailableError(
            f"cannot load pretrained weights {name}@{tag} ({str(exc).splitlines()[0][:200]})",
            hint=_ways_out(name),
        ) from exc
    return model, preprocess


def _named_tokenizer(name: str) -> Tokenizer:
    try:
        with quiet_open_clip():
            return open_clip.get_tokenizer(name)
    except OSError as exc:  # an HF tokenizer that is not cached while offline
        raise WeightsUnavailableError(
            f"the tokenizer of {name} is not available offline ({str(exc).splitlines()[0][:200]})",
            hint=_ways_out(name),
        ) from exc


def load_model(
    name: str, pretrained: str | None = None, device: str | None = None, precision: str | None = None
) -> LoadedModel:
    """Load ``name`` (open_clip name, checkpoint dir, or dir under models/) with ``pretrained`` weights.

    ``pretrained``: None (seeded random init), an open_clip tag, or a local weights file
    (``.safetensors``, or a torch state dict read with ``weights_only=True``). ``device``: auto when None.
    ``precision``: the engine's inference format (see :mod:`core.models.device`), auto when None.
    """
    dev = resolve_device(device)
    prec = resolve_precision(dev, precision)
    ckpt = _checkpoint_dir(name)
    if ckpt is not None:
        if pretrained:
            raise ModelError(
                f"{ckpt} is a checkpoint dir with its own weights; --pretrained does not apply to it",
                hint="drop --pretrained",
            )
        model, meta, model_id = load_checkpoint_dir(ckpt)
        cfg = meta["model_cfg"]
        preprocess = make_preprocess(model, meta.get("preprocess_cfg"))
        tokenizer = make_tokenizer(cfg)
        name = ckpt.name
    else:
        _check_name(name)
        cfg = open_clip.get_model_config(name)
        if pretrained is None:
            model, model_id = _seeded_model(cfg), f"{name}@random"
            preprocess = make_preprocess(model)
        elif _is_path(pretrained):
            path = Path(pretrained).expanduser()
            state = read_state_dict(path)
            model = _seeded_model(cfg)
            load_weights(model, state, str(path))
            model_id = f"{name}@{file_sha256(path)[:12]}"
            preprocess = make_preprocess(model)
        else:
            model, preprocess = _from_tag(name, pretrained)
            model_id = f"{name}@{pretrained}"
        tokenizer = make_tokenizer(cfg) if name in builtin_configs() else _named_tokenizer(name)
    model_id += towers_suffix(cfg)  # package-supplied towers: their versions are part of the id
    model = model.to(dev).eval()
    return LoadedModel(
        name=name,
        pretrained=pretrained,
        model_id=model_id,
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        device=dev,
        embed_dim=int(cfg["embed_dim"]),
        context_length=int(getattr(tokenizer, "context_length", 77)),
        precision=prec,
    )
