"""Building open_clip models from config dicts, reading weight files, and capsearch checkpoint dirs.

A checkpoint dir holds ``model.safetensors`` (the state dict) and ``model.json``
(``{"model_cfg": <open_clip model config>, "model_id": "<dir name>@<sha256[:12] of the weights>", ...meta}``).
Importing this module registers the built-in configs (``core/models/configs``) with open_clip.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from core.atomic import file_sha256, write_bytes, write_json
from core.errors import ModelError, WeightsUnavailableError
from core.models.catalogue import CONFIG_DIR, META_FILE
from core.models.text_tower import local_hf_name, localize_hf_text_cfg
from core.models.towers import TOWERS_KEY, attach_towers
from core.safe_load import UnreadableArtifactError, first_line, load_torch_file

WEIGHTS_FILE = "model.safetensors"
Tokenizer = Callable[..., torch.Tensor]
# The open_clip models capsearch builds (open_clip has no type hints: to mypy this is Any).
ClipModel = open_clip.CLIP | open_clip.CustomTextCLIP | open_clip.CoCa

open_clip.add_model_config(CONFIG_DIR)


@contextmanager
def quiet_open_clip() -> Iterator[None]:
    """Silence the root-logger warnings of open_clip ("initialized randomly") and transformers, and the
    latter's "Loading weights" progress bar, which would otherwise print on stderr through the CLI's own."""
    from transformers.utils import logging as hf_logging  # imported by open_clip already

    previous, bars = logging.root.manager.disable, hf_logging.is_progress_bar_enabled()
    logging.disable(logging.WARNING)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.disable(previous)
        if bars:
            hf_logging.enable_progress_bar()


def build_model(model_cfg: dict[str, Any], pretrained_text: bool = False) -> nn.Module:
    """An open_clip model (CLIP, CustomTextCLIP or CoCa) from a config dict, with fresh random weights.

    Like ``open_clip.create_model``: an ``hf_model_name`` text tower or ``custom_text`` selects
    CustomTextCLIP, a ``multimodal_cfg`` CoCa. No tower weights are downloaded; a Hugging Face text tower
    is built from its config in the Hugging Face cache or a locally packaged copy, and loads its pretrained
    weights only with ``pretrained_text`` (training from a config; otherwise the caller loads weights).
    """
    cfg = copy.deepcopy(model_cfg)
    text_cfg = cfg.get("text_cfg", {})
    is_hf = localize_hf_text_cfg(text_cfg, pretrained_text)
    if "timm_model_name" in cfg.get("vision_cfg", {}):
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    towers = cfg.pop(TOWERS_KEY, None)  # capsearch's package-supplied towers (core.models.towers)
    custom = cfg.pop("custom_text", False) or is_hf
    cls = (
        open_clip.CoCa
        if custom and "multimodal_cfg" in cfg
        else open_clip.CustomTextCLIP
        if custom
        else open_clip.CLIP
    )
    try:
        with quiet_open_clip():
            return attach_towers(cls(**cfg), {**cfg, TOWERS_KEY: towers} if towers else cfg)
    except (TypeError, ValueError, KeyError, AssertionError) as exc:
        raise ModelError(f"cannot build an open_clip model from this config ({exc})") from exc
    except OSError as exc:  # transformers' "can't load config for ..." when the HF tower is not cached
        raise WeightsUnavailableError(
            f"the Hugging Face text tower {text_cfg.get('hf_model_name')!r} is not available offline ({exc})",
            hint="go online once so Hugging Face caches it, or point hf_model_name at a local folder",
        ) from exc


def make_preprocess(model: nn.Module, overrides: dict[str, Any] | None = None) -> Callable[..., torch.Tensor]:
    """The eval image transform for ``model`` (open_clip defaults, the tower's image size, ``overrides``)."""
    own = getattr(getattr(model, "visual", None), "capsearch_preprocess", {})  # e.g. a tower's mean/std
    cfg = merge_preprocess_dict(PreprocessCfg(), {**own, **(overrides or {})})
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if size is not None:
        cfg["size"] = tuple(size) if isinstance(size, list | tuple) else size
    open_clip.set_model_preprocess_cfg(model, cfg)
    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)


def make_tokenizer(model_cfg: dict[str, Any]) -> Tokenizer:
    """The tokenizer a config implies: open_clip's BPE, or the HF tokenizer of an HF text tower."""
    text_cfg = model_cfg.get("text_cfg", {})
    context = int(text_cfg.get("context_length", 77))
    kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
    name = text_cfg.get("hf_tokenizer_name")
    if not name:
        return open_clip.SimpleTokenizer(context_length=context, **kwargs)
    name = local_hf_name(name)
    try:
        with quiet_open_clip():
            return open_clip.tokenizer.HFTokenizer(
                name, context_length=context, tokenizer_mode=text_cfg.get("tokenizer_mode"), **kwargs
            )
    except OSError as exc:
        raise WeightsUnavailableError(
            f"the Hugging Face tokenizer {name!r} is not available offline ({exc})",
            hint="go online once so Hugging Face caches it, or point hf_tokenizer_name at a local folder",
        ) from exc


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``torch.load(weights_only=True)``, CPU).

    Accepts the usual wrappers (``{"state_dict": ...}``, ``{"model": ...}``) and strips ``module.``.
    """
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file {path} does not exist",
            hint="check the path, or omit --pretrained for random init",
        )
    hint = "give a .safetensors file or a torch state dict saved with torch.save(model.state_dict(), ...)"
    if path.suffix == ".safetensors":
        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(f"cannot read weights from {path} ({first_line(exc)})", hint=hint) from exc
    else:
        try:
            state = load_torch_file(path, hint=hint)
        except UnreadableArtifactError as exc:
            raise ModelError(f"cannot read weights: {exc.message}", hint=hint) from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model", "module"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; any missing, unexpected or misshapen key is a :class:`ModelError`."""
    hint = "pass the architecture the weights were trained with"
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches
        lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise ModelError(
            f"the weights in {source} do not fit this architecture: {lines[:1]}", hint=hint
        ) from exc
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"the weights in {source} do not fit this architecture: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:2]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {result.unexpected_keys[:2]})",
            hint=hint,
        )


def save_checkpoint_dir(path: Path, model: nn.Module, model_cfg: dict[str, Any], meta: dict[str, Any]) -> str:
    """Write ``model.safetensors`` then ``model.json`` into ``path`` (each atomically); returns the model id.

    The model id is ``f"{path.name}@{sha256(model.safetensors)[:12]}"``; loading checks it against the file.
    """
    path = Path(path)
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    write_bytes(path / WEIGHTS_FILE, save(state))  # bytes, then our atomic write: no writer-side temp file
    model_id = f"{path.name}@{file_sha256(path / WEIGHTS_FILE)[:12]}"
    write_json(path / META_FILE, {**meta, "model_cfg": model_cfg, "model_id": model_id})
    return model_id


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """The parsed ``model.json`` of a checkpoint dir (checked to carry a ``model_cfg``)."""
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path / META_FILE} is not readable JSON ({exc})") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("model_cfg"), dict):
        raise ModelError(
            f"{path / META_FILE} has no model_cfg", hint="was it written by save_checkpoint_dir?"
        )
    return meta


def load_checkpoint_dir(path: Path) -> tuple[nn.Module, dict[str, Any], str]:
    """The model of a checkpoint dir (CPU, eval mode), its ``model.json`` and its model id."""
    meta = read_checkpoint_meta(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(
            f"checkpoint {path} has no {WEIGHTS_FILE}", hint="the training run may not have finished"
        )
    sha12 = file_sha256(weights)[:12]
    recorded = str(meta.get("model_id", ""))
    if recorded and not recorded.endswith(f"@{sha12}"):
        raise ModelError(
            f"checkpoint {path} is inconsistent: {WEIGHTS_FILE} changed after model.json was written",
            hint="re-save the checkpoint",
        )
    model = build_model(meta["model_cfg"])
    load_weights(model, read_state_dict(weights), str(weights))
    return model.eval(), meta, f"{path.name}@{sha12}"
