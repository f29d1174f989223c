"""The app on a photo library: a :class:`~core.search.library_search.LibrarySearcher` seen by the search
screen as a retriever (text->image and image->image; a library has no captions). Hits name files by their
path under the library's roots and show their date and camera where captions would be."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.data.records import ImageRecord
from core.errors import CapsearchError
from core.progress import Reporter

if TYPE_CHECKING:
    from core.search.library_search import LibraryHit, LibrarySearcher
    from core.search.retriever import Hit


def default_library_name() -> str | None:
    """The default library, when there is one (file-system reads only)."""
    from core.library.home import default_library

    return default_library()


class LibraryRetriever:
    """What the search screen needs of a retriever, over a library."""

    split = "all"
    caption_count = 0
    records: list[ImageRecord] = []
    data = None  # no prepared dataset: Browse and Evaluate stay on their own

    def __init__(self, searcher: LibrarySearcher) -> None:
        self.searcher = searcher
        self.roots = [Path(r) for r in searcher.lib.catalogue.roots()]

    @property
    def dataset(self) -> str:
        return f"library {self.searcher.name}"

    @property
    def size(self) -> int:
        return self.searcher.size

    @property
    def model_id(self) -> str:
        return self.searcher.model_id

    @property
    def index_kind(self) -> str:
        return self.searcher.index_kind

    def index_kind_of(self, direction: Any) -> str:
        return self.searcher.index_kind

    def image_path(self, record: ImageRecord) -> Path:
        return Path(record.image)

    def _name(self, path: Path) -> str:
        for root in self.roots:
            if path.is_relative_to(root):
                return str(path.relative_to(root))
        return path.name

    def _hits(self, found: list[LibraryHit]) -> list[Hit]:
        from core.search.retriever import Hit

        out = []
        for hit in found:
            f = hit.file
            note = time.strftime("%Y-%m-%d %H:%M", time.gmtime(f.when)) + (
                f" · {f.camera}" if f.camera else ""
            )
            record = ImageRecord(id=self._name(hit.path), image=f.path, captions=(note,))
            out.append(Hit(rank=hit.rank, score=hit.score, record=record, path=hit.path))
        return out

    def search_text(self, query: str, k: int = 10) -> list[Hit]:
        return self._hits(self.searcher.search_text(query, k))

    def image_to_image(self, image: str, k: int = 10) -> list[Hit]:
        return self._hits(self.searcher.image_to_image(image, k))

    def image_to_text(self, image: str, k: int = 10) -> list[Hit]:
        raise CapsearchError("a library has no captions to search", hint="use text→image or image→image")

    def text_to_text(self, query: str, k: int = 10) -> list[Hit]:
        raise CapsearchError("a library has no captions to search", hint="use text→image or image→image")

    def ground_truth(self, query: str) -> None:
        return None


def open_library(name: str, reporter: Reporter) -> LibraryRetriever:
    from core.search.library_search import LibrarySearcher

    return LibraryRetriever(LibrarySearcher.open(name, reporter))
