"""The ``prepare`` and ``datasets`` CLI commands, run in-process through the console entry point."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from core.cli import build_parser, main


def test_prepare_synthetic_then_list(artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "synthetic", "--n", "40", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "synthetic: 40 images, 200 captions, random split" in out and "problems: 0" in out
    assert (artifacts / "datasets" / "synthetic" / "dataset.json").is_file()

    assert main(["prepare", "synthetic", "--n", "20", "--name", "tiny", "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["name"] == "tiny" and meta["images"] == 20 and meta["splits"]["train"]["images"] == 14

    assert main(["datasets"]) == 0
    listing = capsys.readouterr().out
    assert "synthetic" in listing and "tiny" in listing and "28" in listing and "200" in listing
    assert main(["datasets", "--json"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == ["synthetic", "tiny"]


def test_prepare_folder_gallery_and_flickr8k(
    artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(photos / f"p{i}.png")
    (photos / "broken.jpg").write_bytes(b"")
    assert main(["prepare", "folder", str(photos), "--out", str(tmp_path / "g")]) == 0
    out = capsys.readouterr().out
    assert "gallery split" in out and "problems: 1 (empty_file 1)" in out

    f8k = tmp_path / "f8k"
    (f8k / "Images").mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    for i in range(10):
        (f8k / "Images" / f"{i}.jpg").write_bytes(buf.getvalue())
    (f8k / "captions.txt").write_text(
        "image,caption\n" + "".join(f"{i}.jpg,picture {i}\n" for i in range(10))
    )
    assert main(["prepare", "flickr8k", str(f8k), "--ratios", "0.6,0.2,0.2", "--seed", "1", "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert [meta["splits"][s]["images"] for s in ("train", "val", "test")] == [6, 2, 2]
    assert meta["ratios"] == [0.6, 0.2, 0.2] and meta["seed"] == 1


def test_fatal_errors_are_one_line_with_exit_code_2(
    artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prepare", "folder", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "is not a folder" in err and "Traceback" not in err
    assert main(["prepare", "flickr8k"]) == 2
    assert "no Flickr8k folder or zip given" in capsys.readouterr().err
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "photos" / "a.png")
    assert (
        main(["prepare", "folder", str(tmp_path / "photos"), "--captions", str(tmp_path / "nope.csv")]) == 2
    )
    assert "cannot read captions file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "folder", str(tmp_path), "--ratios", "0.5,0.5"])
    assert exc.value.code == 2
    assert "bad split ratios" in capsys.readouterr().err
    assert main(["prepare"]) == 2  # no source kind: the command's help


def test_help_texts_explain_the_options() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    prepare = sub.choices["prepare"]
    kinds = next(a for a in prepare._actions if a.dest == "source_kind").choices
    flickr = kinds["flickr8k"].format_help()
    assert "--download" in flickr and "untested" in flickr and "--split-scheme" in flickr
    assert "--captions" in kinds["folder"].format_help() and "JSONL" in kinds["folder"].format_help()
    assert "--n" in kinds["synthetic"].format_help()
    assert "datasets" in sub.choices
