"""Regression tests for the hardening cases C5-C9 and C15-C17 (each failed before its fix).

C1 and C10: tests/test_no_code_from_artifacts.py; C2-C4: tests/test_cli_output.py, tests/test_safe_text.py,
tests/tui/test_tui_hostile_text.py; C11, C12 and a full disk: tests/test_write_failures.py; C13, C14:
tests/test_properties.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from core.cli import main as capsearch
from core.embed.cache import split_embeddings
from core.embed.chunks import CAPTION_FILE, IMAGE_FILE, MANIFEST
from core.models.loading import load_model
from core.progress import Reporter

TINY = "capsearch-tiny"


def cli(*argv: str) -> int:
    return capsearch(list(argv))


def test_c05_a_file_name_that_is_not_utf8_is_reported_and_skipped(tmp_path, artifacts, capsys):
    src = tmp_path / "photos"
    src.mkdir()
    Image.new("RGB", (24, 24), (200, 10, 10)).save(src / "good.jpg")
    Image.new("RGB", (24, 24), (10, 200, 10)).save(os.fsdecode(bytes(src) + b"/caf\xe9.jpg"), format="JPEG")
    assert cli("prepare", "folder", str(src)) == 0
    report = (artifacts / "datasets" / "photos" / "report.txt").read_text(encoding="utf-8")
    assert "caf\\udce9.jpg" in report and "bad_file_name" in report
    assert "\udce9" not in capsys.readouterr().err


@pytest.fixture
def embedded(synthetic_small, artifacts):
    lm = load_model(TINY, device="cpu", precision="fp32")
    first = split_embeddings(lm, synthetic_small, "test")
    return lm, first


class Recorder(Reporter):
    """Keeps every log line."""

    def __init__(self) -> None:
        super().__init__()
        self.logs: list[str] = []

    def log(self, message: str) -> None:
        self.logs.append(message)


@pytest.mark.parametrize(
    ("case", "file", "damage"),
    [
        ("C6 zero bytes", IMAGE_FILE, lambda p: p.write_bytes(b"")),
        (
            "C8 same-shape garbage",
            IMAGE_FILE,
            lambda p: np.save(p, np.random.rand(*np.load(p).shape).astype("f4")),
        ),
        ("truncated captions", CAPTION_FILE, lambda p: p.write_bytes(p.read_bytes()[:100])),
    ],
)
def test_c06_c08_a_damaged_embedding_cache_is_detected_and_rebuilt(
    embedded, synthetic_small, case, file, damage
):
    lm, first = embedded
    damage(first.cache_dir / file)
    recorder = Recorder()
    again = split_embeddings(lm, synthetic_small, "test", recorder)
    assert np.array_equal(again.image_emb, first.image_emb), case
    assert np.array_equal(again.caption_emb, first.caption_emb), case
    assert any("damaged" in line for line in recorder.logs), recorder.logs


def test_c07_a_truncated_chunk_is_redone(synthetic_small, artifacts):
    lm = load_model(TINY, device="cpu", precision="fp32")
    clean = split_embeddings(lm, synthetic_small, "test", chunk_size=4)
    folder = clean.cache_dir
    manifest = (folder / MANIFEST).read_text()
    (folder / MANIFEST).write_text(manifest.replace('"complete": true', '"complete": false'))
    (folder / IMAGE_FILE).unlink()
    chunk = folder / "chunk-00000.npz"
    np.savez(chunk, images=np.zeros((4, lm.embed_dim), "f4"))
    chunk.write_bytes(chunk.read_bytes()[:50])
    again = split_embeddings(lm, synthetic_small, "test", chunk_size=4)
    assert np.array_equal(again.image_emb, clean.image_emb)


def test_c09_damaged_training_caches_are_rebuilt(synthetic_small, artifacts):
    import torch

    from core.train.data import cache_dir, preload_images

    first = preload_images(synthetic_small, "val", 32)
    [path] = (cache_dir() / "images").glob("*.npy")
    np.save(path, np.zeros(first.shape, np.uint8))  # same shape, wrong content: silently served before
    again = preload_images(synthetic_small, "val", 32)
    assert torch.equal(again, first)
    path.write_bytes(b"")
    assert torch.equal(preload_images(synthetic_small, "val", 32), first)


def test_c15_captions_that_match_no_image_are_an_error(tmp_path, artifacts, capsys):
    src = tmp_path / "photos"
    src.mkdir()
    Image.new("RGB", (24, 24)).save(src / "a.jpg")
    captions = tmp_path / "captions.csv"
    captions.write_text("image,caption\nnot-there.jpg,a dog\n", encoding="utf-8")
    assert cli("prepare", "folder", str(src), "--captions", str(captions)) == 2
    err = capsys.readouterr().err
    assert "no usable image" in err and "not-there.jpg" in err
    assert not (artifacts / "datasets" / "photos").exists()


def test_c16_a_bomb_image_query_is_refused(tmp_path, synthetic_small, artifacts, capsys, monkeypatch):
    where = ("--dataset", str(synthetic_small.dir), "--model", TINY)
    assert cli("search", "a red circle", *where) == 0  # the gallery is embedded before the limit drops
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # the same guard, scaled down for a fast test
    query = tmp_path / "big.png"
    Image.new("RGB", (80, 80)).save(query)  # 6,400 pixels: over the limit, under twice it (a warning only)
    capsys.readouterr()
    status = cli("search", "--image", str(query), *where)
    err = capsys.readouterr().err
    assert status == 2 and "decompression bomb" in err and "Warning" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ("eval", "--latency-queries", "-5"),
        ("search", "dog", "-k", "0"),
        ("train", "--dataset", "x", "--lr", "nan"),
        ("train", "--dataset", "x", "--epochs", "-1"),
        ("prepare", "synthetic", "--n", "0"),
        ("index", "--ef-search", "0"),
    ],
)
def test_c17_numbers_outside_their_range_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli(*argv)
    assert exit_.value.code == 2
    assert "error: argument" in capsys.readouterr().err
