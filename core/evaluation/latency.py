"""Latency figures: one percentile rule (numpy's linear interpolation) for every timing in every result file."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentile(values_ms: Sequence[float], q: float, digits: int | None = 4) -> float:
    """The ``q``-th percentile of ``values_ms`` (linear interpolation), rounded to ``digits`` unless None."""
    value = float(np.percentile(np.asarray(values_ms, dtype=np.float64), q))
    return value if digits is None else round(value, digits)


def percentiles(values_ms: Sequence[float], digits: int | None = 4) -> dict[str, float]:
    """``{"p50": .., "p95": ..}`` of ``values_ms``, as :func:`percentile` computes them."""
    return {f"p{q}": percentile(values_ms, q, digits) for q in (50, 95)}
