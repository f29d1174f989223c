"""`--watch`: a photo written into a watched folder is searchable, from another process's point of view
(a freshly opened searcher), within 5 s; a burst of files is embedded in batches by a few updates."""

from __future__ import annotations

import threading
import time

import pytest
from library_helpers import key_of, library_of, make_folder, write_photo

from core.search.library_search import LibrarySearcher

pytest.importorskip("watchdog")


def _searchable(path) -> bool:
    searcher = LibrarySearcher.open("w", device="cpu")
    try:
        return any(h.file.path == str(path) for h in searcher.image_to_image(path, k=3))
    finally:
        searcher.close()


def test_a_new_photo_is_searchable_within_5_seconds(tmp_path, artifacts, tiny_model):
    from core.library.watch import watch

    photos = tmp_path / "photos"
    make_folder(photos, 4)
    lib, _ = library_of("w", [photos], tiny_model)
    stop, updates = threading.Event(), []
    thread = threading.Thread(
        target=watch,
        args=(lib, tiny_model, key_of(tiny_model)),
        kwargs={"stop": stop, "on_update": updates.append},
        daemon=True,
    )
    thread.start()
    try:
        time.sleep(0.5)  # the observer is running
        start = time.monotonic()
        new = write_photo(photos / "incoming" / "new.jpg", 4242)
        while not _searchable(new):
            assert time.monotonic() - start < 5.0, "the new photo was not searchable within 5 s"
            time.sleep(0.1)
        for i in range(40):  # a burst
            write_photo(photos / "burst" / f"b{i}.jpg", 5000 + i)
        deadline = time.monotonic() + 30
        while sum(u.embedded for u in updates) < 41 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sum(u.embedded for u in updates) == 41
        assert len(updates) <= 6  # coalesced: a few updates, not one per file
    finally:
        stop.set()
        thread.join(timeout=10)
    lib.close()
