"""prepare_folder end to end: every validation problem on crafted files, valid rows kept, determinism."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.folder import collect_folder
from core.data.prepare import prepare_folder
from core.data.records import load_dataset
from core.data.splits import DEFAULT_RATIOS
from core.errors import DatasetError
from core.progress import Reporter


def _img(fmt: str, color: tuple[int, ...] = (200, 30, 30), size: int = 16, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), color).save(buf, format=fmt)
    return buf.getvalue()


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(buf, format="JPEG")
    data = buf.getvalue()
    return data[: int(len(data) * 0.8)]


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


GOOD = {
    "a.jpg": _img("JPEG"),
    "sub/b.png": _img("PNG", (0, 0, 255)),
    "sub/deeper/c.jpeg": _img("JPEG", (0, 255, 0)),
    "sub/photo.dat": _img("PNG", (9, 9, 9)),  # an image by content, not by name
    "noext": _img("JPEG", (50, 50, 50)),
    "cmyk.jpg": _img("JPEG", (0, 255, 255, 0), mode="CMYK"),
}
BAD = {
    "empty.jpg": (b"", "empty_file"),
    "fake.png": (b"this is text, not a PNG", "not_an_image"),
    "corrupt.jpg": (b"\xff\xd8\xff\xe0" + bytes(300), "unreadable_image"),
    "cut.jpg": (_truncated_jpeg(), "truncated_image"),
    "bomb.png": (_img("PNG", size=64), "decompression_bomb"),
}
CAPTION_LINES = [
    b'{"image": "a.jpg", "captions": ["red a", "red a again"]}',
    b'{"image": "sub/b.png", "captions": ["b one", "  "]}',  # 2: empty caption
    b'{"image": "sub/deeper/c.jpeg", "captions": ["c one"]}',
    b'{"image": "sub/photo.dat", "captions": ["dat one"]}',
    b'{"image": "noext", "captions": ["noext one"]}',
    b'{"image": "missing.jpg", "captions": ["ghost"]}',  # 6: missing image
    b'{"image": "../outside.jpg", "captions": ["escape"]}',  # 7: path escape
    b'{"image": "cmyk.jpg", "captions": ["cmyk one"]}',
    b'{"image": "a.jpg", "captions": ["red a"]}',  # 9: duplicate
    b'{"image": "a.jpg", "captions": ["unclosed"',  # 10: malformed
    b'{"image": "a.jpg", "captions": ["\xff\xfe"]}',  # 11: not UTF-8
    b'{"image": "corrupt.jpg", "captions": ["lost with its image"]}',
    b'{"image": "c.jpeg", "captions": ["c by name"]}',  # a unique file name anywhere is accepted
]
EXPECTED_RECORDS = {
    "a": ("a.jpg", ["red a", "red a again"]),
    "sub/b": ("sub/b.png", ["b one"]),
    "sub/deeper/c": ("sub/deeper/c.jpeg", ["c one", "c by name"]),
    "sub/photo": ("sub/photo.dat", ["dat one"]),
    "noext": ("noext", ["noext one"]),
    "cmyk": ("cmyk.jpg", ["cmyk one"]),
}


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A folder with good and bad images (bomb limit lowered to 1,000 pixels) and a JSONL captions file."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    root = tmp_path / "photos"
    _write(root, GOOD)
    _write(root, {rel: data for rel, (data, _) in BAD.items()})
    _write(
        root, {"uncaptioned.png": _img("PNG", (1, 2, 3)), "notes.txt": b"not an image", ".hidden.jpg": b"x"}
    )
    captions = tmp_path / "captions.jsonl"
    captions.write_bytes(b"\n".join(CAPTION_LINES) + b"\n")
    return root, captions


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_problem_is_reported_and_every_valid_row_kept(
    folder: tuple[Path, Path], artifacts: Path
) -> None:
    root, captions = folder
    collection = collect_folder(root, captions, DEFAULT_RATIOS, 42, Reporter())
    problems = {(p.file, p.line, p.kind) for p in collection.report.problems}
    cap = str(captions.resolve())  # a captions file outside the folder is named by its absolute path
    expected = {(rel, None, kind) for rel, (_, kind) in BAD.items()}
    expected |= {
        ("uncaptioned.png", None, "uncaptioned_image"),
        (cap, 2, "empty_caption"),
        (cap, 6, "missing_image"),
        (cap, 7, "path_escape"),
        (cap, 9, "duplicate_caption"),
        (cap, 10, "malformed_line"),
        (cap, 11, "bad_encoding"),
    }
    assert problems == expected

    ds = prepare_folder(root, captions=captions, name="photos")
    assert ds.dir == artifacts / "datasets" / "photos"
    records = {r.id: (r.image, list(r.captions)) for s in ds.splits for r in ds.split(s)}
    assert records == EXPECTED_RECORDS
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [4, 1, 1]
    assert ds.meta["problems"] == len(expected)
    assert ds.meta["problem_kinds"]["decompression_bomb"] == 1
    assert ds.meta["split_scheme"] == "random" and ds.meta["seed"] == 42
    assert ds.meta["images"] == 6 and ds.meta["captions"] == 8
    report = (ds.dir / "report.txt").read_text()
    assert f"Problems: {len(expected)}" in report
    assert f"{cap}:7: [path_escape] image path '../outside.jpg' escapes the dataset root" in report
    assert f"{cap}:6: [missing_image] 'missing.jpg' has 1 caption(s) but there is no such image" in report
    assert "empty.jpg: [empty_file] zero-byte file" in report
    assert "bomb.png: [decompression_bomb]" in report and "cut.jpg: [truncated_image]" in report
    assert "1 caption(s) of 1 unusable image(s) were left out" in report


def test_uncaptioned_folder_is_a_test_gallery(
    folder: tuple[Path, Path], artifacts: Path, tmp_path: Path
) -> None:
    root, _ = folder
    other = tmp_path / "elsewhere"
    _write(other, {"e.png": _img("PNG", (4, 4, 4))})
    (root / "linked").symlink_to(other, target_is_directory=True)
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # a cycle must not hang the walk
    ds = prepare_folder(root)
    assert ds.name == "photos" and ds.splits == ["test"] and not ds.has_captions
    assert ds.meta["split_scheme"] == "gallery"
    ids = [r.id for r in ds.split("test")]
    assert ids == sorted([*EXPECTED_RECORDS, "uncaptioned", "linked/e"])
    assert all(r.captions == () for r in ds.split("test"))
    assert ds.meta["problem_kinds"] == {kind: 1 for _, kind in BAD.values()}


def test_prepare_is_byte_identical_and_leaves_the_source_alone(
    folder: tuple[Path, Path], tmp_path: Path
) -> None:
    root, captions = folder
    before = _snapshot(tmp_path)
    first = prepare_folder(root, captions=captions, out=tmp_path / "out" / "1")
    files = {p.name: p.read_bytes() for p in first.dir.iterdir()}
    assert set(files) == {"train.jsonl", "val.jsonl", "test.jsonl", "dataset.json", "report.txt"}
    prepare_folder(root, captions=captions, out=tmp_path / "out" / "1")
    assert {p.name: p.read_bytes() for p in first.dir.iterdir()} == files
    second = prepare_folder(root, captions=captions, out=tmp_path / "out" / "2")
    assert {p.name: p.read_bytes() for p in second.dir.iterdir()} == files
    after = {k: v for k, v in _snapshot(tmp_path).items() if not k.startswith(str(tmp_path / "out"))}
    assert after == before


def test_different_seed_changes_split_and_checksum(folder: tuple[Path, Path], tmp_path: Path) -> None:
    root, captions = folder
    a = prepare_folder(root, captions=captions, out=tmp_path / "a", seed=1)
    b = prepare_folder(root, captions=captions, out=tmp_path / "b", seed=2, ratios=(0.5, 0.0, 0.5))
    assert [len(b.split(s)) for s in b.splits] == [3, 3] and b.splits == ["train", "test"]
    assert a.fingerprint != b.fingerprint
    assert json.loads((tmp_path / "b" / "dataset.json").read_text())["ratios"] == [0.5, 0.0, 0.5]


def test_ids_keep_extensions_only_on_collision(tmp_path: Path) -> None:
    root = tmp_path / "pics"
    _write(root, {"x.jpg": _img("JPEG"), "x.png": _img("PNG"), "y.gif": _img("GIF")})
    ds = prepare_folder(root, out=tmp_path / "out")
    assert [(r.id, r.image) for r in ds.split("test")] == [
        ("x.jpg", "x.jpg"),
        ("x.png", "x.png"),
        ("y", "y.gif"),
    ]


def test_fatal_inputs_raise_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing here")
    with pytest.raises(DatasetError, match="no readable images"):
        prepare_folder(empty, out=tmp_path / "o")
    with pytest.raises(DatasetError, match="is not a folder"):
        prepare_folder(tmp_path / "nope", out=tmp_path / "o")
    _write(empty, {"a.png": _img("PNG")})
    with pytest.raises(DatasetError, match="inside the source"):
        prepare_folder(empty, out=empty / "prepared")
    with pytest.raises(DatasetError, match="cannot read captions file"):
        prepare_folder(empty, captions=tmp_path / "missing.jsonl", out=tmp_path / "o")
    assert not (empty / "prepared").exists()


def test_load_dataset_by_name(folder: tuple[Path, Path], artifacts: Path) -> None:
    root, captions = folder
    prepare_folder(root, captions=captions, name="my photos")
    ds = load_dataset("my_photos")
    assert ds.name == "my_photos" and Path(ds.meta["root"]) == root.resolve()
    assert os.path.isfile(ds.image_path(ds.split(ds.splits[0])[0]))
