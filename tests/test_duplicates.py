"""Near-duplicate groups: range search, cliques without chaining, collapsing results, the CLI."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from core.cli import main
from core.index.duplicates import collapse_duplicates, find_duplicate_groups


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _angles(*degrees: float) -> np.ndarray:
    """Unit vectors in a plane (padded to 4-d) at these angles: cos(angle difference) is their similarity."""
    rad = np.radians(degrees)
    return _unit(np.stack([np.cos(rad), np.sin(rad), np.zeros_like(rad), np.zeros_like(rad)], axis=1))


def test_a_chain_through_an_intermediate_is_not_one_group() -> None:
    step = math.degrees(math.acos(0.96))  # a~b and b~c at 0.96, a~c at 0.843
    vectors = _angles(0.0, step, 2 * step, 90.0)
    groups = find_duplicate_groups(vectors, ["a", "b", "c", "far"], 0.9)
    assert len(groups) == 1 and len(groups[0].ids) == 2 and "b" in groups[0].ids
    assert not any({"a", "c"} <= set(g.ids) for g in groups)


def test_the_most_similar_pair_groups_first() -> None:
    vectors = _angles(0.0, 10.0, 12.0)  # b~c (2 degrees) is closer than a~b (10 degrees)
    groups = find_duplicate_groups(vectors, ["a", "b", "c"], 0.98)  # a~c: 0.978
    assert [sorted(g.ids) for g in groups] == [["b", "c"]]


def test_groups_are_disjoint_cliques_above_the_threshold() -> None:
    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(30, 16)))
    members = np.repeat(centres, 4, axis=0) + rng.normal(scale=0.05, size=(120, 16))
    vectors = _unit(np.concatenate([members, rng.normal(size=(80, 16))]))
    ids = [f"i{k}" for k in range(len(vectors))]
    threshold = 0.93
    groups = find_duplicate_groups(vectors, ids, threshold)
    seen: set[str] = set()
    sims = vectors @ vectors.T
    for g in groups:
        assert not seen & set(g.ids)
        seen |= set(g.ids)
        pair_sims = [sims[a, b] for k, a in enumerate(g.rows) for b in g.rows[k + 1 :]]
        assert min(pair_sims) > threshold - 1e-6
        assert g.min_similarity == pytest.approx(min(pair_sims), abs=1e-5)
        assert g.max_similarity == pytest.approx(max(pair_sims), abs=1e-5)
        assert g.ids == [ids[r] for r in g.rows]
    # every pair above the threshold that was left apart would break a clique if joined
    group_of = {r: n for n, g in enumerate(groups) for r in g.rows}
    close = np.argwhere(np.triu(sims > threshold + 1e-6, 1))
    assert len(close) > 0
    for a, b in close:
        if group_of.get(a) is None and group_of.get(b) is None:
            pytest.fail(f"{a} and {b} are near-duplicates but neither is in a group")
    assert len(groups) >= 25


def test_the_representative_is_the_most_central_member() -> None:
    vectors = _angles(0.0, 3.0, 6.0)
    (group,) = find_duplicate_groups(vectors, ["a", "b", "c"], 0.99)
    assert group.representative == "b" and sorted(group.ids) == ["a", "b", "c"]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="ids"):
        find_duplicate_groups(_angles(0.0, 1.0), ["a"], 0.9)
    with pytest.raises(ValueError, match="threshold"):
        find_duplicate_groups(_angles(0.0, 1.0), ["a", "b"], 1.5)
    assert find_duplicate_groups(_angles(0.0), ["a"], 0.9) == []


@dataclass(frozen=True)
class _Record:
    id: str


@dataclass(frozen=True)
class _Hit:
    record: _Record
    score: float


def test_collapse_keeps_the_best_scored_member_of_each_group() -> None:
    vectors = _angles(0.0, 1.0, 2.0, 40.0, 41.0, 90.0)
    groups = find_duplicate_groups(vectors, list("abcdef"), 0.99)
    assert sorted(sorted(g.ids) for g in groups) == [["a", "b", "c"], ["d", "e"]]
    hits = [
        _Hit(_Record(i), s)
        for i, s in [("f", 0.9), ("b", 0.8), ("e", 0.7), ("a", 0.85), ("d", 0.75), ("c", 0.1)]
    ]
    kept = collapse_duplicates(hits, groups)
    assert [h.record.id for h in kept] == ["f", "a", "d"]
    pairs = [("b", 0.5), ("x", 0.4), ("c", 0.6)]
    assert collapse_duplicates(pairs, groups, key=lambda h: h[0], score=lambda h: h[1]) == [
        ("x", 0.4),
        ("c", 0.6),
    ]


def test_cli_groups_a_dataset_and_is_consistent_with_the_core(
    synthetic_small, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "duplicates",
        "--dataset",
        str(synthetic_small.dir),
        "--model",
        "capsearch-tiny",
        "--split",
        "test",
    ]
    assert main([*args, "--threshold", "0.999", "--json", "--embeddings-only"]) == 0
    strict = json.loads(capsys.readouterr().out)
    assert main([*args, "--threshold", "0.99", "--json", "--embeddings-only"]) == 0
    loose = json.loads(capsys.readouterr().out)
    wide = ["--hash-distance", "64", "--pixel-threshold", "0.01"]  # (nearly) any pixel match, or any hash
    assert main([*args, "--threshold", "0.99", "--json", *wide]) == 0
    by_pixels = json.loads(capsys.readouterr().out)  # every two images accepted: one group of all
    assert by_pixels["pixel_hashes"] and by_pixels["rule"]["hash_distance"] == 64
    assert by_pixels["rule"]["pixel_threshold"] == 0.01
    assert [len(g["ids"]) for g in by_pixels["groups"]] == [by_pixels["images"]]
    assert loose["images"] == strict["images"] == len(synthetic_small.split("test"))
    for found, threshold in ((strict, 0.999), (loose, 0.99)):
        assert all(g["min_similarity"] > threshold - 1e-6 for g in found["groups"])
        assert all(len(g["ids"]) == len(g["paths"]) >= 2 for g in found["groups"])
    in_groups = lambda found: sum(len(g["ids"]) for g in found["groups"])  # noqa: E731
    assert in_groups(loose) >= in_groups(strict)
    with pytest.raises(SystemExit) as stop:
        main([*args, "--threshold", "2"])
    assert stop.value.code == 2
    assert "not a cosine similarity" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--hash-distance", "65"])
    assert "64 bits" in capsys.readouterr().err
