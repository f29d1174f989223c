"""Which parameters train: freezing policies for open_clip models (native or Hugging Face text tower).

Policies:
- ``full``: everything trains.
- ``last:N``: the last ``N`` blocks of each tower plus what follows them (final norms, pooling,
  projections) and the temperature; the stems and earlier blocks are frozen.
- ``proj-norm``: the two projections, every normalisation layer and the temperature.
- ``proj``: the two projections only (the original project's "projection only" setting).
- ``frozen-text``: the whole text trunk is frozen, its projection and the image tower train (with a Hugging
  Face text tower the trainer then computes the trunk's caption features once instead of every step).

LoRA-style adapters are not offered: the compact models here are small enough to tune fully, and the
``last:N`` / ``proj-norm`` policies cover the cheap end.
"""

from __future__ import annotations

import re

from torch import nn

from core.errors import CapsearchError
from core.train.choices import POLICIES

_NORMS = (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)
_PROJ = re.compile(r"^(visual\.proj|visual\.attnpool\.c_proj\.|visual\.head\.|text_projection|text\.proj\b)")
_HEAD = re.compile(
    r"^(logit_scale|logit_bias|visual\.(ln_post|proj|attnpool|head)|ln_final|text_projection|text\.proj\b)"
)
_TEXT_TRUNK = re.compile(
    r"^(token_embedding|positional_embedding|transformer\.|ln_final|text\.transformer\.)"
)
_BLOCKS = (
    ("visual", re.compile(r"^visual\.transformer\.resblocks\.(\d+)\.")),
    ("visual", re.compile(r"^visual\.layer(\d)\.(\d+)\.")),
    ("text", re.compile(r"^transformer\.resblocks\.(\d+)\.")),
    ("text", re.compile(r"^text\.transformer\.encoder\.layer\.(\d+)\.")),
)


def parse_policy(policy: str) -> tuple[str, int]:
    """``"last:2"`` -> ``("last", 2)``; other policies -> ``(policy, 0)``; unknown -> a clear error."""
    if policy.startswith("last:"):
        try:
            n = int(policy.split(":", 1)[1])
        except ValueError:
            n = -1
        if n < 1:
            raise CapsearchError(
                f"bad freezing policy {policy!r}", hint="write last:N with N >= 1, e.g. last:2"
            )
        return "last", n
    if policy not in POLICIES:
        raise CapsearchError(f"unknown freezing policy {policy!r}", hint=f"use one of: {', '.join(POLICIES)}")
    return policy, 0


def _block_key(name: str) -> tuple[str, tuple[int, ...]] | None:
    for tower, pattern in _BLOCKS:
        m = pattern.match(name)
        if m:
            return tower, tuple(int(g) for g in m.groups())
    return None


def _norm_params(model: nn.Module) -> set[str]:
    names: set[str] = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, _NORMS) or type(module).__name__.endswith("LayerNorm"):
            names.update(
                f"{mod_name}.{p}" if mod_name else p for p, _ in module.named_parameters(recurse=False)
            )
    return names


def trainable_names(model: nn.Module, policy: str) -> set[str]:
    """Names of the parameters that ``policy`` leaves trainable."""
    kind, n = parse_policy(policy)
    names = [name for name, _ in model.named_parameters()]
    if kind == "full":
        return set(names)
    if kind == "proj":
        return {x for x in names if _PROJ.match(x)}
    if kind == "proj-norm":
        return {x for x in names if _PROJ.match(x) or x.startswith("logit_")} | _norm_params(model)
    if kind == "frozen-text":
        return {x for x in names if not _TEXT_TRUNK.match(x)}
    blocks: dict[str, list[tuple[int, ...]]] = {}
    for x in names:
        key = _block_key(x)
        if key and key[1] not in blocks.setdefault(key[0], []):
            blocks[key[0]].append(key[1])
    keep = {tower: set(sorted(ids)[-n:]) for tower, ids in blocks.items()}
    out = set()
    for x in names:
        key = _block_key(x)
        if (key and key[1] in keep[key[0]]) or (not key and _HEAD.match(x)):
            out.add(x)
    return out


def apply_freeze(model: nn.Module, policy: str) -> int:
    """Set ``requires_grad`` per ``policy``; returns the number of trainable parameter values."""
    keep = trainable_names(model, policy)
    if not keep:
        raise CapsearchError(f"freezing policy {policy!r} leaves nothing to train in this model")
    count = 0
    for name, param in model.named_parameters():
        param.requires_grad_(name in keep)
        count += param.numel() if name in keep else 0
    return count


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, except that modules whose parameters are all frozen stay in eval mode (their
    batch-norm statistics do not drift and their dropout is off)."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()
