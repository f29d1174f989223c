"""The ``index``, ``eval`` and ``search`` commands: output formats for people and for pipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli import build_parser
from core.cli.console import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(build_parser(), list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def common(synthetic_small, artifacts: Path) -> list[str]:
    return ["--dataset", str(synthetic_small.dir), "--model", "capsearch-tiny", "--device", "cpu"]


def test_search_paths_prints_one_existing_path_per_line(capsys, common) -> None:
    code, out, _ = _run(capsys, "search", "a red circle", *common, "-k", "3", "--paths")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3 and all(Path(line).is_file() for line in lines)


def test_search_json(capsys, common, synthetic_small) -> None:
    caption = synthetic_small.split("test")[0].captions[0]
    code, out, _ = _run(capsys, "search", caption, *common, "-k", "4", "--json")
    assert code == 0
    payload = json.loads(out)
    assert payload["direction"] == "text-image" and payload["k"] == 4 and payload["index"] == "exact"
    assert payload["model_id"] == "capsearch-tiny@random"
    assert [h["rank"] for h in payload["hits"]] == [1, 2, 3, 4]
    assert set(payload["hits"][0]) == {"rank", "score", "id", "path", "caption", "caption_index"}
    assert payload["ground_truth"]["rank"] >= 1

    image_id = payload["hits"][0]["id"]
    code, out, _ = _run(capsys, "search", "--image", image_id, "--direction", "image-text", *common, "--json")
    hits = json.loads(out)["hits"]
    assert code == 0 and len(hits) == 10 and all(h["caption"] for h in hits)


def test_search_table_and_errors(capsys, common) -> None:
    code, out, _ = _run(capsys, "search", "dog + snow - night", *common, "-k", "2")
    assert code == 0 and "text-image" in out and "score" in out
    code, _, err = _run(capsys, "search", *common)
    assert code == 2 and "needs a text query" in err
    code, _, err = _run(capsys, "search", "--image", "nope", *common)
    assert code == 2 and "neither an image" in err


def test_index_and_eval(capsys, common, artifacts: Path) -> None:
    code, out, _ = _run(capsys, "index", *common, "--kind", "hnsw", "--m", "8")
    assert code == 0 and "hnsw" in out and "m=8" in out
    code, out, _ = _run(
        capsys,
        "eval",
        *common,
        "--index",
        "both",
        "-k",
        "1",
        "5",
        "--json",
        "--m",
        "8",
        "--latency-queries",
        "5",
    )
    assert code == 0
    payload = json.loads(out)
    assert set(payload["metrics"]) == {"exact", "hnsw"}
    assert payload["index"]["hnsw"]["images"]["reused"] is True, "eval reuses the index built above"
    assert Path(payload["path"]).is_file() and "per_query" not in payload
    for key in ("model_id", "dataset", "split", "index", "metrics", "timings", "timestamp", "versions"):
        assert key in payload
    assert payload["recall_vs_exact"]["hnsw"]["k"] == 10
    assert set(payload["timings"]["latency"]) == {"queries", "k", "encode_ms", "exact", "hnsw"}

    from core.evaluation.results import load_history

    history = load_history()
    assert len(history) == 1 and history[0]["path"] == Path(payload["path"]).name
    assert history[0]["metrics"] == payload["metrics"]
    from core.evaluation.results import load_result

    assert "per_query" not in json.loads(Path(payload["path"]).read_text()), "ranks live beside the JSON"
    full = load_result(payload["path"])
    ranks = full.ranks["exact"]
    assert full.ranks["hnsw"].depth == 5 and ranks.depth is None
    assert len(ranks.text_to_image) == payload["counts"]["captions"] == len(full.caption_image)
    assert len(ranks.image_to_text) == payload["counts"]["images"]
    r1 = 100 * sum(r <= 1 for r in ranks.text_to_image) / len(ranks.text_to_image)
    assert payload["metrics"]["exact"]["text_to_image"]["R@1"] == pytest.approx(r1)
