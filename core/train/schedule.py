"""Learning-rate schedule: linear warmup, then a cosine decay to ``min_ratio`` of the base rate.

Progress may be measured in steps or, under a wall-clock budget, in elapsed time, so that the cosine
reaches its floor when the budget runs out.
"""

from __future__ import annotations

import math


def lr_factor(step: int, warmup_steps: int, progress: float, min_ratio: float = 0.0) -> float:
    """Multiplier of the base rate at optimiser step ``step`` (0-based) and ``progress`` in [0, 1]."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    progress = min(max(progress, 0.0), 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return warm * (min_ratio + (1.0 - min_ratio) * cosine)


def progress_of(
    step: int, total_steps: int, elapsed_s: float = 0.0, budget_s: float | None = None, min_steps: int = 0
) -> float:
    """How far training has come: the larger of the step fraction and the elapsed fraction of the budget.
    With ``min_steps``, the budget's fraction never runs ahead of ``step / min_steps``, so a slow (busy)
    machine still trains that many steps under a full schedule."""
    frac = step / max(total_steps, 1)
    if budget_s:
        spent = elapsed_s / budget_s
        if min_steps > 0:
            spent = min(spent, step / min_steps)
        frac = max(frac, spent)
    return min(frac, 1.0)
