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


def test_updates_after_events_use_the_encoder_and_batch_size_of_the_first(tmp_path, artifacts, tiny_model):
    """`library update --watch --backend openvino` (or `--engine ray`) must not fall back to torch in this
    process for the updates the events start."""
    from core.embed.engine import iter_image_batches
    from core.library.watch import watch

    photos = tmp_path / "photos"
    make_folder(photos, 2)
    lib, _ = library_of("e", [photos], tiny_model)
    calls: list[tuple[int, int]] = []

    def encode(paths, batch_size, reporter=None):
        calls.append((len(paths), batch_size))
        return iter_image_batches(tiny_model, paths, batch_size, reporter=reporter)

    stop, updates = threading.Event(), []
    thread = threading.Thread(
        target=watch,
        args=(lib, tiny_model, key_of(tiny_model)),
        kwargs={"stop": stop, "on_update": updates.append, "batch_size": 3, "encode": encode},
        daemon=True,
    )
    thread.start()
    try:
        time.sleep(0.5)
        for i in range(5):
            write_photo(photos / "new" / f"n{i}.jpg", 7000 + i)
        deadline = time.monotonic() + 20
        while sum(u.embedded for u in updates) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=10)
    lib.close()
    assert sum(u.embedded for u in updates) == 5
    assert sum(n for n, _ in calls) == 5 and {b for _, b in calls} == {3}
