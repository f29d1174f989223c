"""Near-duplicates by pixels as well as embeddings: perceptual hashes and thumbnails of real (tiny,
generated) JPEG copies, the combined rule, the pixel check, the catalogue's perceptual-hash and thumbnail
columns (and their migration from format 1), and HEIC."""

from __future__ import annotations

import io
import sqlite3

import numpy as np
import pytest
from library_helpers import key_of, library_of, scene
from PIL import Image, ImageEnhance

from core.data.phash import Fingerprint, file_fingerprint, hash_matrix
from core.data.pixel_match import pixel_scores
from core.index.duplicates import DuplicateRule, find_duplicate_groups
from core.library.catalogue import FORMAT, Catalogue
from core.library.home import LibraryError
from core.library.scan import heic_available, read_file, with_fingerprints
from core.library.update import hash_missing, vectors_by_path

RULE = DuplicateRule(threshold=0.95, hash_distance=4, loose_hash_distance=12, loose_threshold=0.9)
COPIES = ["half", "quality", "crop", "brightness", "crop+half"]


def _recoloured(image: Image.Image) -> Image.Image:
    """The same luminance (so the same greyscale perceptual hash) in opposite colours."""
    y, cb, cr = image.convert("YCbCr").split()
    return Image.merge("YCbCr", (y, *(c.point(lambda v: 255 - v) for c in (cb, cr)))).convert("RGB")


def _copies(original: Image.Image) -> dict[str, Image.Image]:
    w, h = original.size
    buf = io.BytesIO()
    original.save(buf, "JPEG", quality=40)
    dw, dh = w * 5 // 200, h * 5 // 200  # 5% cropped in all, half on each side
    return {
        "half": original.resize((w // 2, h // 2), Image.Resampling.LANCZOS),
        "quality": Image.open(io.BytesIO(buf.getvalue())),
        "crop": original.crop((dw, dh, w - dw, h - dh)),
        "brightness": ImageEnhance.Brightness(original).enhance(1.2),
        "crop+half": original.crop((0, 0, w - 2 * dw, h - 2 * dh)).resize((w // 2, h // 2)),
        "recoloured": _recoloured(original),
    }


@pytest.fixture(scope="module")
def photo_prints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Fingerprint]:
    folder = tmp_path_factory.mktemp("copies")
    images = {"original": scene(1), "unrelated": scene(2), **_copies(scene(1))}
    out = {}
    for name, image in images.items():
        image.save(folder / f"{name}.jpg", quality=90)
        found = file_fingerprint(folder / f"{name}.jpg")
        assert found is not None
        out[name] = found
    return out


@pytest.fixture(scope="module")
def photo_hashes(photo_prints: dict[str, Fingerprint]) -> dict[str, str | None]:
    return {name: found.phash for name, found in photo_prints.items()}


def _distance(a: str | None, b: str | None) -> int:
    packed, _ = hash_matrix([a, b])
    return int(np.unpackbits(packed[0] ^ packed[1]).sum())


@pytest.mark.parametrize("kind", ["half", "quality", "crop", "brightness"])
def test_a_copy_hashes_close_to_its_original_and_far_from_another_photo(photo_hashes, kind):
    assert _distance(photo_hashes["original"], photo_hashes[kind]) <= 12
    assert _distance(photo_hashes["original"], photo_hashes["unrelated"]) > 16
    assert _distance(photo_hashes["unrelated"], photo_hashes[kind]) > 16


def _pixel_match(prints: dict[str, Fingerprint], a: str, b: str) -> float:
    return float(pixel_scores([prints[a].thumb, prints[b].thumb], np.array([0]), np.array([1]))[0])


@pytest.mark.parametrize("kind", COPIES)
def test_a_copy_matches_its_original_in_pixels_and_another_photo_does_not(photo_prints, kind):
    threshold = DuplicateRule().pixel_threshold
    assert _pixel_match(photo_prints, "original", kind) >= threshold
    assert _pixel_match(photo_prints, kind, "original") == _pixel_match(photo_prints, "original", kind)
    assert _pixel_match(photo_prints, "unrelated", kind) < 0.5


def test_a_recoloured_photo_hashes_like_its_original_but_fails_the_pixel_check(photo_prints):
    ids = ["original", "recoloured"]
    hashes, thumbs = [photo_prints[i].phash for i in ids], [photo_prints[i].thumb for i in ids]
    assert _distance(*hashes) <= DuplicateRule().hash_distance  # a collision for hashes alone
    assert _pixel_match(photo_prints, *ids) < DuplicateRule().pixel_threshold
    far = _vectors(0.5)
    assert len(find_duplicate_groups(far, ids, DuplicateRule(), hashes)) == 1
    assert find_duplicate_groups(far, ids, DuplicateRule(), hashes, thumbs) == []


def test_the_pixel_check_finds_copies_beyond_the_hash_distance(photo_prints):
    ids = ["original", *COPIES, "unrelated", "recoloured"]
    hashes, thumbs = [photo_prints[i].phash for i in ids], [photo_prints[i].thumb for i in ids]
    vectors = np.eye(len(ids), dtype=np.float32)  # embeddings tell nothing
    strict = DuplicateRule(hash_distance=-1, loose_hash_distance=-1)  # hashes alone accept nothing
    assert find_duplicate_groups(vectors, ids, strict, hashes) == []
    (group,) = find_duplicate_groups(vectors, ids, strict, hashes, thumbs)
    assert sorted(group.ids) == sorted(["original", *COPIES])
    missing = [*thumbs[:-2], None, None]  # rows without a thumbnail fall back to the hash clauses
    assert find_duplicate_groups(vectors, ids, strict, hashes, missing) == [group]
    with pytest.raises(ValueError, match="thumbnails"):
        find_duplicate_groups(vectors, ids, strict, hashes, thumbs[:2])


def _vectors(*similarities: float) -> np.ndarray:
    """Row 0 and one row per similarity to it (unit vectors in a plane; the last on the other side of row 0
    from the others, so that it is no closer to them than to row 0)."""
    angles = np.arccos(np.clip([1.0, *similarities], -1, 1))
    angles[-1] *= -1 if len(angles) > 2 else 1
    return np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    ("kind", "similarity"), [("half", 0.8), ("quality", 0.85), ("crop", 0.93), ("brightness", 0.9)]
)
def test_a_copy_embedded_below_the_threshold_is_grouped_by_its_pixels(photo_hashes, kind, similarity):
    ids = ["original", kind, "unrelated"]
    vectors = _vectors(similarity, 0.94)  # the unrelated photo embeds closer to the original than the copy
    hashes = [photo_hashes[i] for i in ids]
    assert find_duplicate_groups(vectors, ids, RULE.threshold) == []  # embeddings alone miss the copy
    (group,) = find_duplicate_groups(vectors, ids, RULE, hashes)
    assert sorted(group.ids) == sorted(["original", kind])
    assert group.max_hash_distance == _distance(photo_hashes["original"], photo_hashes[kind])


def test_photos_with_close_hashes_but_distant_embeddings_need_the_strict_distance(photo_hashes):
    ids = ["original", "crop"]
    crop_distance = _distance(photo_hashes["original"], photo_hashes["crop"])
    hashes = [photo_hashes[i] for i in ids]
    far = _vectors(0.5)
    strict = DuplicateRule(0.95, crop_distance - 1, 12, 0.9)
    assert find_duplicate_groups(far, ids, strict, hashes) == []  # loose distance needs the similarity too
    assert len(find_duplicate_groups(_vectors(0.91), ids, strict, hashes)) == 1
    assert len(find_duplicate_groups(far, ids, DuplicateRule(0.95, crop_distance, -1, 1.0), hashes)) == 1


def test_pixel_pairs_do_not_chain_unrelated_photos():
    # a~b by hash only, b~c by embedding only; a and c are neither: no group holds both
    hashes = ["0" * 16, "0" * 15 + "1", "f" * 16]
    vectors = _vectors(0.2, 0.2)
    vectors[2] = vectors[1]
    groups = find_duplicate_groups(vectors, ["a", "b", "c"], RULE, hashes)
    assert len(groups) == 1 and len(groups[0].ids) == 2 and "b" in groups[0].ids
    unhashed = find_duplicate_groups(vectors, ["a", "b", "c"], RULE, [None, None, None])
    assert unhashed == find_duplicate_groups(vectors, ["a", "b", "c"], RULE)
    assert [g.ids for g in unhashed] == [["b", "c"]]


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="64 bits"):
        DuplicateRule(hash_distance=65)
    with pytest.raises(ValueError, match="cosine"):
        DuplicateRule(loose_threshold=1.5)
    with pytest.raises(ValueError, match="hashes"):
        find_duplicate_groups(_vectors(0.5), ["a", "b"], RULE, ["0" * 16])


def test_scan_fingerprints_once_per_content(tmp_path):
    scene(3).save(tmp_path / "a.jpg", quality=90)
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    rows = [read_file(str(tmp_path / n), 1, 1) for n in ("a.jpg", "b.jpg")]
    a, b = with_fingerprints(rows, {})
    assert (a.phash, a.thumb) == file_fingerprint(tmp_path / "a.jpg") and a.phash and len(a.phash) == 16
    assert a.thumb is not None and len(a.thumb) == 32 * 32 * 3
    assert b.failed is not None and b.phash is None and b.thumb is None
    assert rows[0].hash is not None
    known = {rows[0].hash: Fingerprint("0" * 16, bytes(3072))}
    (moved,) = with_fingerprints(rows[:1], known)  # a known content is not decoded again
    assert (moved.phash, moved.thumb) == ("0" * 16, bytes(3072))


_FORMAT_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE files (
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, hash TEXT, taken REAL, camera TEXT, width INTEGER, height INTEGER, failed TEXT
);
INSERT INTO meta VALUES ('format', '1'), ('generation', '7');
"""


def test_a_format_1_catalogue_is_migrated_in_place_and_hashed(tmp_path, artifacts, tiny_model):
    photos = tmp_path / "photos"
    photos.mkdir()
    scene(4).save(photos / "a.jpg", quality=90)
    scene(4).resize((80, 60)).save(photos / "a-half.jpg", quality=50)
    lib, _ = library_of("old", [photos], tiny_model)
    path = lib.catalogue.path
    lib.catalogue.db.execute("UPDATE files SET phash = NULL")  # as format 1 left them
    lib.catalogue.db.execute("UPDATE meta SET value = '1' WHERE key = 'format'")
    lib.catalogue.db.execute("ALTER TABLE files DROP COLUMN phash")
    lib.catalogue.db.execute("ALTER TABLE files DROP COLUMN thumb")
    lib.close()

    with Catalogue(path) as cat:  # migrated on open: column added, rows and generation kept
        assert cat.get_meta("format") == str(FORMAT) and cat.generation > 0
        assert {f.path for f in cat.files()} == {str(photos / "a.jpg"), str(photos / "a-half.jpg")}
        assert all(f.phash is None for f in cat.files()) and len(cat.unhashed()) == 2
        assert cat.thumbs_by_id(f.id for f in cat.files()) == {}
    lib, stats = library_of("old", [photos], tiny_model)  # an update fills the columns, embeds nothing
    assert stats.embedded == 0 and lib.catalogue.unhashed() == []
    files = {f.path: f for f in lib.catalogue.files()}
    a, half = files[str(photos / "a.jpg")], files[str(photos / "a-half.jpg")]
    assert _distance(a.phash, half.phash) <= 4
    thumbs = lib.catalogue.thumbs_by_id([a.id, half.id])
    assert pixel_scores([thumbs[a.id], thumbs[half.id]], np.array([0]), np.array([1]))[0] > 0.95
    assert hash_missing(lib, _NoReport()) == 0
    lib.close()


class _NoReport:
    def update(self, *args: object, **kw: object) -> None: ...

    def check_cancelled(self) -> None: ...


def test_a_newer_catalogue_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "catalogue.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_FORMAT_1.replace("'format', '1'", "'format', '99'"))
    db.close()
    with pytest.raises(LibraryError, match="format 99, this capsearch reads format"):
        Catalogue(path)


def test_a_heic_photo_is_scanned_hashed_and_embedded(tmp_path, artifacts, tiny_model):
    if not heic_available():
        pytest.skip("pillow-heif is not installed (the `heic` extra)")
    photos = tmp_path / "photos"
    photos.mkdir()
    scene(5).save(photos / "p.heic", format="HEIF", quality=80)
    scene(6).save(photos / "q.jpg", quality=90)
    lib, stats = library_of("heic", [photos], tiny_model)
    assert (stats.new, stats.embedded, stats.failed) == (2, 2, 0)
    assert str(photos / "p.heic") in vectors_by_path(lib, key_of(tiny_model))
    row = lib.catalogue.file_by_path(str(photos / "p.heic"))
    assert row is not None and row.phash and row.width == 160 and row.height == 120
    lib.close()
