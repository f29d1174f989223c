"""WiSE-FT (Wortsman et al. 2022): interpolate the starting and fine-tuned weights, sweep the weight alpha on
the val split, keep the best. alpha = 0 gives the starting model back, alpha = 1 the fine-tuned one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core.progress import Reporter, ensure

DEFAULT_ALPHAS = tuple(round(a / 10, 1) for a in range(11))
State = dict[str, torch.Tensor]


def interpolate(start: State, finetuned: State, alpha: float) -> State:
    """``(1 - alpha) * start + alpha * finetuned`` for floating tensors; other entries from ``finetuned``."""
    if start.keys() != finetuned.keys():
        raise ValueError("the two state dicts hold different tensors")
    return {
        k: torch.lerp(start[k].float(), v.float(), alpha).to(v.dtype) if v.is_floating_point() else v.clone()
        for k, v in finetuned.items()
    }


def cpu_state(model: nn.Module) -> State:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@dataclass
class WiseFtResult:
    """The alpha curve (one row per alpha with the val metrics) and the chosen alpha."""

    curve: list[dict[str, Any]]
    best_alpha: float
    best_metrics: dict[str, Any]


def sweep(
    model: nn.Module,
    start: State,
    finetuned: State,
    score: Callable[[nn.Module], tuple[float, dict[str, Any]]],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    reporter: Reporter | None = None,
) -> WiseFtResult:
    """Evaluate every alpha with ``score(model) -> (value, row)``; leave the best weights loaded in ``model``.
    Ties go to the smaller alpha (closer to the starting weights, less forgetting)."""
    reporter = ensure(reporter)
    if not alphas:
        raise ValueError("no alpha to sweep")
    curve: list[dict[str, Any]] = []
    best: tuple[float, float, dict[str, Any]] = (float("-inf"), alphas[0], {})
    for i, alpha in enumerate(alphas):
        reporter.check_cancelled()
        model.load_state_dict(interpolate(start, finetuned, alpha))
        value, row = score(model)
        curve.append({"alpha": alpha, **row})
        if value > best[0]:
            best = (value, alpha, row)
        reporter.update("wise-ft", i + 1, len(alphas), alpha=alpha, mean_recall=value)
    model.load_state_dict(interpolate(start, finetuned, best[1]))
    return WiseFtResult(curve, best[1], best[2])
