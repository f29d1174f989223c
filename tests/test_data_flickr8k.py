"""Flickr8k ingestion: token and CSV captions, official and random splits, zip archives, the real data."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from core.data.prepare import prepare_flickr8k
from core.data.splits import split_counts
from core.errors import DatasetError

N = 12
NAMES = [f"{1000 + i}_abc{i:02d}.jpg" for i in range(N)]
LISTS = {
    "Flickr_8k.trainImages.txt": NAMES[:6],
    "Flickr_8k.devImages.txt": NAMES[6:8],
    "Flickr_8k.testImages.txt": NAMES[8:10],
}  # NAMES[10:] are in no list, like 91 images of the real Flickr8k


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (i * 20 % 256, 100, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def _token_text() -> str:
    return "".join(f"{name}#{k}\tcaption {k} of image {name[:4]} .\n" for name in NAMES for k in range(5))


def make_flickr(root: Path, lists: bool = True, csv: bool = False, image_dir: str = "images") -> Path:
    (root / image_dir).mkdir(parents=True)
    for i, name in enumerate(NAMES):
        (root / image_dir / name).write_bytes(_jpeg(i))
    if csv:
        rows = "".join(f'{n},"caption {k}, of image {n[:4]} ."\n' for n in NAMES for k in range(5))
        (root / "captions.txt").write_text("image,caption\n" + rows)
    else:
        (root / "Flickr8k.token.txt").write_text(_token_text())
    if lists:
        for fname, names in LISTS.items():
            (root / fname).write_text("\n".join(names) + "\n")
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(ds_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(ds_dir.iterdir())}


def test_official_split_from_a_folder(tmp_path: Path, artifacts: Path) -> None:
    src = make_flickr(tmp_path / "f8k")
    ds = prepare_flickr8k(src)
    assert ds.dir == artifacts / "datasets" / "flickr8k"
    assert ds.meta["split_scheme"] == "official" and ds.meta["seed"] is None
    assert {s: ds.meta["splits"][s]["images"] for s in ("train", "val", "test")} == {
        "train": 6,
        "val": 2,
        "test": 2,
    }
    assert ds.meta["images"] == N and ds.meta["captions"] == 5 * N and ds.meta["unassigned"] == 2
    assert ds.meta["problems"] == 0
    train = ds.split("train")
    assert [r.id for r in train] == sorted(Path(n).stem for n in NAMES[:6])
    assert train[0].captions == tuple(f"caption {k} of image 1000 ." for k in range(5))
    assert ds.image_path(train[0]) == src / "images" / NAMES[0]
    assert (
        f"2 usable image(s) are in no official split list and in no split: {NAMES[10]}, {NAMES[11]}"
        in (ds.dir / "report.txt").read_text()
    )


def test_split_list_problems_are_reported(tmp_path: Path) -> None:
    src = make_flickr(tmp_path / "f8k")
    with open(src / "Flickr_8k.testImages.txt", "a") as fh:
        fh.write(f"missing_one.jpg\n{NAMES[0]}\n../../etc/x.jpg\n")
    ds = prepare_flickr8k(src, out=tmp_path / "out")
    report = (ds.dir / "report.txt").read_text()
    assert (
        "Flickr_8k.testImages.txt:3: [missing_image] 'missing_one.jpg' is listed but there is no such image"
        in report
    )
    assert f"Flickr_8k.testImages.txt:4: [split_overlap] '{NAMES[0]}' is already in the train split" in report
    assert "Flickr_8k.testImages.txt:5: [path_escape]" in report
    assert ds.meta["problems"] == 3 and len(ds.split("test")) == 2


def test_csv_captions_without_lists_use_the_seeded_random_split(tmp_path: Path) -> None:
    src = make_flickr(tmp_path / "kaggle", lists=False, csv=True, image_dir="Images")
    ds = prepare_flickr8k(src, out=tmp_path / "out", seed=7)
    assert (
        ds.meta["split_scheme"] == "random"
        and ds.meta["seed"] == 7
        and ds.meta["ratios"] == [0.7, 0.15, 0.15]
    )
    assert [ds.meta["splits"][s]["images"] for s in ("train", "val", "test")] == split_counts(
        N, (0.7, 0.15, 0.15)
    )
    assert ds.meta["problems"] == 0 and ds.meta["captions"] == 5 * N
    assert ds.split("train")[0].captions[0].startswith("caption 0, of image")
    again = prepare_flickr8k(src, out=tmp_path / "out2", seed=7)
    assert _files(again.dir) == _files(ds.dir)


def test_split_scheme_options(tmp_path: Path) -> None:
    src = make_flickr(tmp_path / "f8k")
    ds = prepare_flickr8k(src, out=tmp_path / "r", scheme="random", ratios=(0.5, 0.25, 0.25))
    assert ds.meta["split_scheme"] == "random" and ds.meta["unassigned"] == 0
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [6, 3, 3]
    assert "official split lists ignored" in (ds.dir / "report.txt").read_text()

    (src / "Flickr_8k.devImages.txt").unlink()
    partial = prepare_flickr8k(src, out=tmp_path / "p")
    assert partial.meta["split_scheme"] == "random"
    assert partial.meta["problem_kinds"] == {"missing_split_list": 1}
    with pytest.raises(DatasetError, match="split lists are not all present"):
        prepare_flickr8k(src, out=tmp_path / "o", scheme="official")
    with pytest.raises(DatasetError, match="unknown split scheme"):
        prepare_flickr8k(src, out=tmp_path / "o", scheme="karpathy")


def test_bad_images_and_caption_lines_are_reported(tmp_path: Path) -> None:
    src = make_flickr(tmp_path / "f8k")
    (src / "images" / NAMES[1]).write_bytes(_jpeg(1)[:40])
    (src / "images" / "zero.jpg").write_bytes(b"")
    with open(src / "Flickr8k.token.txt", "a", encoding="utf-8") as fh:
        fh.write("ghost.jpg#0\tno such image\n2258277193_586949ec62.jpg.1#0\tknown bad entry\nbad line\n")
    ds = prepare_flickr8k(src, out=tmp_path / "out")
    kinds = ds.meta["problem_kinds"]
    assert kinds == {"empty_file": 1, "truncated_image": 1, "missing_image": 2, "malformed_line": 1}
    assert ds.meta["images"] == N - 1 and len(ds.split("train")) == 5
    report = (ds.dir / "report.txt").read_text()
    assert f"images/{NAMES[1]}: [truncated_image]" in report
    assert "Flickr8k.token.txt:61: [missing_image] 'ghost.jpg' has 1 caption(s)" in report


def test_zip_archive_is_read_without_modifying_it(tmp_path: Path, artifacts: Path) -> None:
    src = make_flickr(tmp_path / "f8k")
    archive = tmp_path / "Flickr8k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                zf.write(path, f"Flickr8k/{path.relative_to(src).as_posix()}")
        zf.writestr("../evil.txt", "escape attempt")
        zf.writestr("__MACOSX/Flickr8k/images/._x.jpg", "resource fork")
    digest = _sha(archive)
    from_dir = prepare_flickr8k(src, out=tmp_path / "from_dir")
    from_zip = prepare_flickr8k(archive, out=tmp_path / "from_zip")
    assert _sha(archive) == digest
    for split in ("train", "val", "test"):
        assert from_zip.split(split) == from_dir.split(split)
    assert from_zip.root.is_relative_to(artifacts / "cache" / "archives")
    assert not (tmp_path / "evil.txt").exists() and not any(artifacts.rglob("evil.txt"))
    assert from_zip.meta["problem_kinds"] == {"path_escape": 1}
    assert (
        "Flickr8k.zip: [path_escape] member '../evil.txt' escapes the archive"
        in (from_zip.dir / "report.txt").read_text()
    )
    first = _files(from_zip.dir)
    prepare_flickr8k(archive, out=tmp_path / "from_zip")  # reuses the extraction cache
    assert _files(from_zip.dir) == first


def test_folder_of_distribution_archives(tmp_path: Path, artifacts: Path) -> None:
    """The layout --download produces: Flickr8k_Dataset.zip (images) and Flickr8k_text.zip (captions, lists)."""
    dl = tmp_path / "downloads"
    dl.mkdir()
    with zipfile.ZipFile(dl / "Flickr8k_Dataset.zip", "w") as zf:
        for i, name in enumerate(NAMES):
            zf.writestr(f"Flicker8k_Dataset/{name}", _jpeg(i))
    with zipfile.ZipFile(dl / "Flickr8k_text.zip", "w") as zf:
        zf.writestr("Flickr8k.token.txt", _token_text())
        for fname, names in LISTS.items():
            zf.writestr(fname, "\n".join(names) + "\n")
    ds = prepare_flickr8k(dl, out=tmp_path / "out")
    assert ds.meta["split_scheme"] == "official" and ds.meta["problems"] == 0
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [6, 2, 2]


def test_fatal_layout_errors(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DatasetError, match="no Flickr8k captions file"):
        prepare_flickr8k(tmp_path / "nothing", out=tmp_path / "o")
    with pytest.raises(DatasetError, match="no such folder or archive"):
        prepare_flickr8k(tmp_path / "absent", out=tmp_path / "o")
    (tmp_path / "notazip.zip").write_bytes(b"hello")
    with pytest.raises(DatasetError, match="neither a folder nor a zip"):
        prepare_flickr8k(tmp_path / "notazip.zip", out=tmp_path / "o")
    (tmp_path / "caps").mkdir()
    (tmp_path / "caps" / "captions.txt").write_text("a.jpg#0\thello\n")
    with pytest.raises(DatasetError, match="no images found"):
        prepare_flickr8k(tmp_path / "caps", out=tmp_path / "o")


@pytest.mark.flickr8k
def test_real_flickr8k(flickr8k_dir: Path, tmp_path: Path) -> None:
    ds = prepare_flickr8k(flickr8k_dir, out=tmp_path / "official")
    assert ds.meta["images"] == 8091 and ds.meta["captions"] == 40455 and ds.meta["problems"] == 0
    assert [ds.meta["splits"][s]["images"] for s in ("train", "val", "test")] == [6000, 1000, 1000]
    assert [ds.meta["splits"][s]["captions"] for s in ("train", "val", "test")] == [30000, 5000, 5000]
    assert ds.meta["unassigned"] == 91
    rnd = prepare_flickr8k(flickr8k_dir, out=tmp_path / "random", scheme="random")
    assert [rnd.meta["splits"][s]["images"] for s in ("train", "val", "test")] == [5664, 1214, 1213]
    assert rnd.meta["seed"] == 42 and rnd.meta["problems"] == 0 and rnd.meta["unassigned"] == 0
