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


def number(low: float = 0.0, high: float = math.inf, low_open: bool = False) -> Callable[[str], float]:
    """A finite float option in ``[low, high]`` (``(low, high]`` when ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < low or (low_open and value == low) or value > high:
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"{value:g} is outside {bracket}{low:g}, {high:g}]")
        return value

    parse.__name__ = "number"
    return parse
