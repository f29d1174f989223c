"""Train/val/test splits: official image lists, or a seeded random split by image."""

from __future__ import annotations

import math
import random
from fractions import Fraction
from pathlib import Path

from core.data.records import SPLITS
from core.data.validation import ValidationReport
from core.errors import DatasetError

DEFAULT_RATIOS = (0.7, 0.15, 0.15)


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``"0.7,0.15,0.15"`` -> ``(0.7, 0.15, 0.15)``; three non-negative numbers with a positive sum."""
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError as exc:
        raise DatasetError(f"bad ratios {text!r}", hint="give three numbers, e.g. 0.7,0.15,0.15") from exc
    check_ratios(values)
    return values  # type: ignore[return-value]


def check_ratios(ratios: tuple[float, ...]) -> None:
    if len(ratios) != 3 or not all(math.isfinite(r) and r >= 0 for r in ratios) or sum(ratios) <= 0:
        raise DatasetError(
            f"bad split ratios {ratios}",
            hint="three non-negative numbers for train, val, test, e.g. 0.7,0.15,0.15",
        )


def split_counts(n: int, ratios: tuple[float, ...]) -> list[int]:
    """Image counts per split: largest-remainder rounding of ``n * ratio`` (ties go to the earlier split)."""
    check_ratios(ratios)
    exact = [Fraction(str(r)) for r in ratios]
    total = sum(exact)
    shares = [n * r / total for r in exact]
    counts = [int(s) for s in shares]
    order = sorted(range(len(shares)), key=lambda i: (-(shares[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def random_split(ids: list[str], ratios: tuple[float, ...], seed: int) -> dict[str, list[str]]:
    """Shuffle the sorted ids with ``random.Random(seed)`` and cut them by :func:`split_counts`."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    out: dict[str, list[str]] = {}
    start = 0
    for name, count in zip(SPLITS, split_counts(len(order), ratios), strict=True):
        out[name] = sorted(order[start : start + count])
        start += count
    return out


def read_split_list(path: Path, label: str, report: ValidationReport) -> list[tuple[int, str]]:
    """The non-blank lines of an official list as ``(line number, image file name)``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read split list {path}: {exc.strerror or exc}") from exc
    out = []
    for no, raw in enumerate(data.splitlines(), 1):
        try:
            name = raw.decode("utf-8").strip().removeprefix("\ufeff")
        except UnicodeDecodeError:
            report.add(label, no, "bad_encoding", "not valid UTF-8")
            continue
        if name:
            out.append((no, name))
    return out
