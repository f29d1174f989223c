"""argparse types for numeric options: each refuses what the option cannot mean (negative counts, NaN,
infinity) with a message naming the allowed range, so bad numbers stop at the edge with exit code 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def count(low: int = 1) -> Callable[[str], int]:
    """An integer option of at least ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below the smallest allowed value, {low}")
        return value

    parse.__name__ = f"integer ≥ {low}"
    return parse


def number(
    low: float = 0.0, high: float = math.inf, low_open: bool = False, what: str | None = None
) -> Callable[[str], float]:
    """A finite float option in ``[low, high]`` (``(low, high]`` when ``low_open``); ``what`` names the
    quantity in the out-of-range message."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < low or (low_open and value == low) or value > high:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            where = f"is not {what} in" if what else "is outside"
            raise argparse.ArgumentTypeError(f"{value:g} {where} {interval}")
        return value

    parse.__name__ = "number"
    return parse


SIMILARITY = number(0.0, 1.0, low_open=True, what="a cosine similarity")
"""A cosine-similarity threshold, in (0, 1]."""
