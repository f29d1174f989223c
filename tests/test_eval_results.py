"""Evaluation results: saved apart from computing, read back as the same types, old files load, newer refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.directions import EVALUATED, Direction
from core.evaluation.latency import percentiles
from core.evaluation.recall import Ranks
from core.evaluation.results import (
    FORMAT_VERSION,
    Counts,
    EvalResult,
    IndexLatency,
    Latency,
    NeighbourRecall,
    ResultFileError,
    SideBuild,
    Timings,
    load_history,
    load_result,
    ranks_path,
    save_result,
)
from core.index.split_indexes import caption_numbers


def _result() -> EvalResult:
    metrics = {
        "text_to_image": {"R@1": 50.0, "median_rank": 1.5, "mean_rank": 2.0},
        "image_to_text": {"R@1": 100.0, "median_rank": 1.0, "mean_rank": 1.0},
    }
    hnsw_metrics = {d: {**m, "mean_rank": None} for d, m in metrics.items()}
    build = SideBuild("hnsw", {"m": 16}, 2, False, 0.1, 0.05, 1024)
    latency = Latency(3, 1, {"p50": 1.0, "p95": 2.0}, {"hnsw": IndexLatency({"p50": 0.1}, {"p50": 1.1})})
    return EvalResult(
        model_id="m@random",
        model="m",
        pretrained=None,
        dataset="ds",
        dataset_dir=Path("/data/ds"),
        split="test",
        ks=(1,),
        counts=Counts(images=2, captions=4, failed_images=0),
        index={"hnsw": {"images": build, "captions": build}},
        primary="hnsw",
        by_index={"hnsw": hnsw_metrics},
        recall_vs_exact={"hnsw": NeighbourRecall(10, 99.5, 100.0)},
        timings=Timings(0.5, 1.0, False, {"hnsw": 0.01}, latency, 2.0),
        timestamp="2026-12-01T10:00:00+00:00",
        versions={"python": "3.11"},
        ranks={"hnsw": Ranks(np.array([1, 2, 1, 2]), np.array([1, 1]), depth=1)},
        caption_image=np.array([0, 0, 1, 1]),
    )


def _same(a: EvalResult, b: EvalResult) -> None:
    assert a.to_json() == b.to_json()
    assert a.ranks.keys() == b.ranks.keys()
    for name, ranks in a.ranks.items():
        assert ranks.to_dict() == b.ranks[name].to_dict() and ranks.depth == b.ranks[name].depth
    assert a.caption_image.tolist() == b.caption_image.tolist()


def test_a_saved_result_reads_back_as_it_was(artifacts: Path) -> None:
    result = _result()
    path = save_result(result)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["format_version"] == FORMAT_VERSION and "per_query" not in saved
    assert saved["timings"]["rank_hnsw_s"] == 0.01 and set(saved["timings"]["latency"]) == {
        "queries", "k", "encode_ms", "hnsw"
    }  # fmt: skip
    assert ranks_path(path).is_file() and saved["ranks_file"] == ranks_path(path).name
    _same(load_result(path), result)
    assert [row["path"] for row in load_history()] == [path.name]


def test_a_result_file_without_format_version_loads(artifacts: Path) -> None:
    path = save_result(_result())
    saved = json.loads(path.read_text(encoding="utf-8"))
    del saved["format_version"]
    path.write_text(json.dumps(saved), encoding="utf-8")
    _same(load_result(path), _result())


def test_newer_incomplete_or_rankless_result_files_are_refused_clearly(artifacts: Path) -> None:
    path = save_result(_result())
    saved = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**saved, "format_version": FORMAT_VERSION + 1}), encoding="utf-8")
    with pytest.raises(ResultFileError, match="format version"):
        load_result(path)
    path.write_text(json.dumps({k: v for k, v in saved.items() if k != "counts"}), encoding="utf-8")
    with pytest.raises(ResultFileError, match="not a complete evaluation result"):
        load_result(path)
    path.write_text(json.dumps(saved), encoding="utf-8")
    ranks_path(path).unlink()
    with pytest.raises(ResultFileError, match="cannot read"):
        load_result(path)


def test_directions_map_every_spelling() -> None:
    assert [d.value for d in EVALUATED] == ["text_to_image", "image_to_text"]
    assert [(d.cli, d.short, d.label) for d in EVALUATED] == [
        ("text-image", "t2i", "text → image"),
        ("image-text", "i2t", "image → text"),
    ]
    assert {Direction.from_cli(d.cli) for d in Direction} == set(Direction)
    with pytest.raises(ValueError, match="unknown direction"):
        Direction.from_cli("text_to_image")


def test_percentiles_and_caption_numbers() -> None:
    assert percentiles([1.0, 2.0, 3.0, 4.0]) == {"p50": 2.5, "p95": 3.85}
    assert caption_numbers(np.array([0, 0, 1, 0, 2, 2])) == [0, 1, 0, 2, 0, 1]
