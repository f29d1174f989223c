"""A small photo library for the app's library tests: folders by year, EXIF dates and cameras, a photo
dated only by its file time, and a byte copy (a duplicate). Built once per test module."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tui.library_session import LibraryRetriever

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from library_helpers import library_of, write_photo  # noqa: E402

NAME = "mine"
MTIME_2015 = 1_433_160_000  # 2015-06-01 12:00 UTC


@dataclass
class PhotoLibrary:
    root: Path
    retriever: LibraryRetriever
    artifacts: Path

    def path(self, relative: str) -> Path:
        return (self.root / relative).resolve()


def make_photos(root: Path) -> None:
    for i in range(3):
        write_photo(
            root / "2018" / f"a{i}.jpg", 100 + i, exif_date=f"2018:0{i + 3}:01 10:00:00", camera="Pixel 7"
        )
    for i in range(3):
        write_photo(
            root / "2020" / f"b{i}.jpg",
            200 + i,
            exif_date=f"2020:0{i + 3}:01 10:00:00",
            camera="Canon EOS R5",
        )
    shutil.copyfile(root / "2020" / "b0.jpg", root / "2020" / "b0 copy.jpg")
    old = write_photo(root / "scans" / "c0.jpg", 300)
    os.utime(old, (MTIME_2015, MTIME_2015))


def photo_library_in(base: Path, tiny_model) -> Iterator[PhotoLibrary]:
    """8 photos in library ``mine`` under an artifacts root in ``base`` (set while it is in use), opened for
    searching (the ``photo_library`` fixture, one per test module)."""
    from core.search.library_search import LibrarySearcher

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAPSEARCH_ARTIFACTS", str(base / "artifacts"))
        root = base / "photos"
        make_photos(root)
        lib, stats = library_of(NAME, [root], tiny_model)
        assert stats.embedded == 7 and stats.files == 8  # the copy shares its content's vector
        lib.close()
        searcher = LibrarySearcher.open(NAME)
        yield PhotoLibrary(root.resolve(), LibraryRetriever(searcher), base / "artifacts")
        searcher.close()
