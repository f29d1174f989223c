"""``capsearch index``/``eval`` accept every registered kind and its knobs; bad ones stop with a clear line."""

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


def test_eval_through_ivf_flat_with_its_knob(capsys, synthetic_small, artifacts: Path) -> None:
    common = ["--dataset", str(synthetic_small.dir), "--model", "capsearch-tiny", "--device", "cpu"]
    code, out, err = _run(
        capsys,
        "eval",
        *common,
        "--kind",
        "ivf-flat",
        "--nlist",
        "2",
        "--nprobe",
        "2",
        "--latency-queries",
        "3",
        "--json",
    )
    assert code == 0, err
    payload = json.loads(out)
    assert list(payload["metrics"]) == ["ivf-flat"]
    assert payload["index"]["ivf-flat"]["images"]["params"] == {"nlist": 2, "nprobe": 2}
    assert payload["recall_vs_exact"]["ivf-flat"]["text_to_image"] == 100.0  # every list scanned


def test_bad_knob_and_kind_are_one_line_errors(capsys, synthetic_small, artifacts: Path) -> None:
    common = ["--dataset", str(synthetic_small.dir), "--model", "capsearch-tiny", "--device", "cpu"]
    code, _, err = _run(capsys, "index", *common, "--kind", "ivf-flat", "--nlist", "4", "--nprobe", "9")
    assert code != 0 and "nprobe 9 exceeds nlist 4" in err
    with pytest.raises(SystemExit):
        _run(capsys, "index", *common, "--kind", "ivf")
    assert "invalid choice: 'ivf'" in capsys.readouterr().err


@pytest.mark.flickr8k
@pytest.mark.slow
def test_flickr8k_recall_through_ivf_pq_is_one_command(capsys, flickr8k_dir: Path, artifacts: Path) -> None:
    from core.data.prepare import prepare_flickr8k

    data = prepare_flickr8k(flickr8k_dir, out=artifacts / "datasets" / "flickr8k")
    argv = ["eval", "--dataset", str(data.dir), "--model", "capsearch-tiny", "--device", "cpu"]
    code, out, err = _run(capsys, *argv, "--kind", "ivf-pq", "--latency-queries", "5", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["counts"]["images"] == 1000 and list(payload["metrics"]) == ["ivf-pq"]
    assert payload["index"]["ivf-pq"]["images"]["kind"] == "ivf-pq"
    assert 0 < payload["recall_vs_exact"]["ivf-pq"]["text_to_image"] <= 100
