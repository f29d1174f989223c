"""A library rescan does only what changed: new and edited files are embedded, moved, renamed, copied and
touched files reuse their vectors (0 embedded), deleted files leave the index, unreadable files are
recorded once, and hidden, non-image and excluded files are never catalogued."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from library_helpers import bump_mtime, key_of, library_of, make_folder, write_photo

from core.library.update import update, vectors_by_path
from core.search.library_search import LibrarySearcher


def test_rescan_embeds_only_what_changed(tmp_path, artifacts, tiny_model):
    photos = tmp_path / "photos"
    files = make_folder(photos, 12)
    lib, first = library_of("home", [photos], tiny_model)
    assert (first.new, first.embedded, first.indexed) == (12, 12, 12)

    again = update(lib, tiny_model, key_of(tiny_model))
    assert (again.hashed, again.embedded, again.gone) == (0, 0, 0)
    before = vectors_by_path(lib, key_of(tiny_model))

    files[0].rename(photos / "moved.jpg")  # a move
    shutil.copy(files[1], photos / "d0" / "copy.jpg")  # a copy
    bump_mtime(files[2])  # touched, same bytes
    write_photo(files[3], seed=999)  # edited
    bump_mtime(files[3])
    files[4].unlink()  # deleted
    write_photo(photos / "new" / "n.jpg", seed=1234)  # new
    stats = update(lib, tiny_model, key_of(tiny_model))
    assert (stats.new, stats.changed, stats.touched, stats.gone) == (3, 1, 1, 2)
    assert stats.embedded == 2  # the edit and the new photo; the move and the copy reuse vectors
    assert stats.indexed == 13
    vectors = vectors_by_path(lib, key_of(tiny_model))
    assert np.array_equal(vectors[str(photos / "moved.jpg")], before[str(files[0])])
    assert not np.array_equal(vectors[str(files[3])], before[str(files[3])])
    assert np.array_equal(vectors[str(photos / "d0" / "copy.jpg")], vectors[str(files[1])])
    assert str(files[4]) not in vectors and str(files[0]) not in vectors
    lib.close()

    searcher = LibrarySearcher.open("home", device="cpu")
    hits = searcher.image_to_image(photos / "moved.jpg", k=20)
    paths = [h.file.path for h in hits]
    assert paths[0] in (str(photos / "moved.jpg"),) and str(files[4]) not in paths
    assert len(hits) == 13
    searcher.close()


def test_unreadable_hidden_excluded_and_non_images(tmp_path, artifacts, tiny_model):
    photos = tmp_path / "photos"
    make_folder(photos, 4)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (photos / "notes.txt").write_text("not an image")
    write_photo(photos / ".hidden" / "h.jpg", 5)
    write_photo(photos / ".dot.jpg", 6)
    write_photo(photos / "skipme" / "x.jpg", 7)
    write_photo(photos / "raw" / "y.jpg", 8)
    lib, stats = library_of("x", [photos], tiny_model, excludes=[str(photos / "skipme"), "raw"])
    assert (stats.files, stats.unreadable, stats.embedded, stats.indexed) == (5, 1, 4, 4)
    failures = lib.catalogue.failures()
    assert failures == [(str(photos / "broken.jpg"), "not a readable image")]
    again = update(lib, tiny_model, key_of(tiny_model))
    assert (again.hashed, again.embedded, again.failed) == (0, 0, 0)  # not retried until it changes
    write_photo(photos / "broken.jpg", 9)
    bump_mtime(photos / "broken.jpg")
    fixed = update(lib, tiny_model, key_of(tiny_model))
    assert (fixed.changed, fixed.embedded, fixed.indexed) == (1, 1, 5)
    assert lib.catalogue.failures() == []
    lib.close()


def test_exif_date_and_camera_filters(tmp_path, artifacts, tiny_model):
    photos = tmp_path / "photos"
    write_photo(photos / "a" / "old.jpg", 1, exif_date="2001:02:03 04:05:06", camera="Canon EOS\x1b[31m 5D")
    write_photo(photos / "b" / "new.jpg", 2, exif_date="2023:07:08 09:10:11", camera="Pixel 7")
    write_photo(photos / "b" / "plain.jpg", 3)
    lib, _ = library_of("f", [photos], tiny_model)
    row = lib.catalogue.file_by_path(str(photos / "a" / "old.jpg"))
    assert row is not None and row.camera == "Canon EOS\\x1b[31m 5D"  # escape made visible, stored clean
    assert (row.width, row.height) == (24, 20)
    lib.close()
    from core.library.filters import Filters, parse_date

    s = LibrarySearcher.open("f", device="cpu")
    query = s.query_vector("a photo")
    names = lambda f: sorted(h.path.name for h in s.search_vector(query, 10, f))  # noqa: E731
    assert names(Filters(before=parse_date("2010-01-01"))) == ["old.jpg"]
    assert names(Filters(after=parse_date("2010-01-01"))) == ["new.jpg", "plain.jpg"]  # plain: mtime
    assert names(Filters(camera="pixel")) == ["new.jpg"]
    assert names(Filters(folder=str(photos / "b"))) == ["new.jpg", "plain.jpg"]
    dated = s.search_vector(query, 10, Filters(sort="date"))
    assert [h.path.name for h in dated][-1] == "old.jpg"
    best = s.search_vector(query, 10)
    cut = s.search_vector(query, 10, Filters(min_score=best[1].score))
    assert [h.file.id for h in cut] == [h.file.id for h in best[:2]]
    s.close()


@pytest.mark.slow
def test_a_model_change_keeps_the_old_vectors_until_the_new_ones_are_done(tmp_path, artifacts, tiny_model):
    from core.errors import Cancelled
    from core.library.library import model_key
    from core.models.loading import load_model
    from core.progress import Reporter

    photos = tmp_path / "photos"
    make_folder(photos, 10)
    lib, _ = library_of("m", [photos], tiny_model)
    old = key_of(tiny_model)
    other = load_model("capsearch-tiny", device="cpu", precision="bf16")
    new = model_key("capsearch-tiny", other)
    assert new.key != old.key

    class StopAfterOneBatch(Reporter):
        def update(self, stage, done, total=None, **info):
            if stage == "embed images" and done:
                self.cancel()

    with pytest.raises(Cancelled):
        update(lib, other, new, StopAfterOneBatch(), batch_size=4)
    assert lib.active == old and lib.target == new
    searcher = LibrarySearcher.open("m", device="cpu")
    assert searcher.model_id == old.model_id and searcher.size == 10
    searcher.close()
    done = update(lib, other, new, batch_size=4)
    assert done.embedded == 6 and lib.active == new and lib.target == new
    assert len(vectors_by_path(lib, old)) == 10  # the old vectors stay on disk
    lib.close()


def test_stale_or_damaged_index_and_chunks_are_caught_up(tmp_path, artifacts, tiny_model):
    photos = tmp_path / "photos"
    files = make_folder(photos, 9)
    lib, _ = library_of("d", [photos], tiny_model)
    model = key_of(tiny_model)
    saved = lib.index_folder(model) / "exact"
    files[0].unlink()
    lib.catalogue.apply_scan([lib.catalogue.file_by_path(str(files[0])).id], [], [], [])  # as a killed rescan
    assert not lib.index_is_current(model)
    index = lib.index(model, lib.store(model))  # the saved index is one generation behind: caught up
    assert sorted(index.live_ids().tolist()) == sorted(lib.catalogue.indexed(model.key))
    (saved / "index.faiss").write_bytes(b"garbage")  # a damaged index is rebuilt from the vectors
    assert lib.index(model, lib.store(model)).count == 8
    chunk = next((lib.folder / "vectors" / model.key).glob("chunk-*.npz"))
    chunk.write_bytes(chunk.read_bytes()[:-10])  # a damaged chunk is dropped when next read ...
    assert lib.index(model, lib.store(model)).count == 0
    stats = update(lib, tiny_model, model)  # ... and its contents embedded again
    assert stats.embedded == 8 and stats.indexed == 8
    lib.close()
