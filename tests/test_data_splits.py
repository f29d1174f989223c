"""Split counts, seeded random splits and ratio parsing."""

from __future__ import annotations

import pytest

from core.data.splits import parse_ratios, random_split, split_counts
from core.errors import DatasetError


@pytest.mark.parametrize(
    ("n", "ratios", "expected"),
    [
        (8091, (0.7, 0.15, 0.15), [5664, 1214, 1213]),
        (1000, (0.7, 0.15, 0.15), [700, 150, 150]),
        (120, (0.7, 0.15, 0.15), [84, 18, 18]),
        (10, (7, 1.5, 1.5), [7, 2, 1]),
        (5, (1, 0, 0), [5, 0, 0]),
        (2, (0.7, 0.15, 0.15), [2, 0, 0]),
        (0, (0.7, 0.15, 0.15), [0, 0, 0]),
    ],
)
def test_split_counts(n: int, ratios: tuple[float, ...], expected: list[int]) -> None:
    assert split_counts(n, ratios) == expected


def test_random_split_is_deterministic_disjoint_and_complete() -> None:
    ids = [f"img{i:03d}" for i in range(200)]
    a = random_split(ids, (0.7, 0.15, 0.15), seed=42)
    assert a == random_split(list(reversed(ids)), (0.7, 0.15, 0.15), seed=42)  # input order is irrelevant
    assert [len(a[s]) for s in ("train", "val", "test")] == [140, 30, 30]
    assert sorted(a["train"] + a["val"] + a["test"]) == ids
    assert all(a[s] == sorted(a[s]) for s in a)
    b = random_split(ids, (0.7, 0.15, 0.15), seed=43)
    assert a["test"] != b["test"]


def test_parse_ratios() -> None:
    assert parse_ratios("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.5,0.5", "a,b,c", "-1,1,1", "0,0,0"):
        with pytest.raises(DatasetError):
            parse_ratios(bad)
