"""The app on a photo library: a :class:`~core.search.library_search.LibrarySearcher` seen by the search
screen as a retriever (text->image and image->image; a library has no captions). Hits name files by their
path under the library's roots and show their date and camera where captions would be."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.data.records import ImageRecord
from core.errors import CapsearchError
from core.progress import Reporter
from tui.library_filters import SearchFilters

if TYPE_CHECKING:
    from core.library.catalogue import FileRow, ModelKey
    from core.library.duplicates import LibraryDuplicates
    from core.library.library import Library
    from core.library.update import UpdateStats
    from core.models.loading import LoadedModel
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

    def record(self, f: FileRow) -> ImageRecord:
        """A library file as the app shows images: its path under a root, and its date and camera."""
        note = time.strftime("%Y-%m-%d %H:%M", time.gmtime(f.when)) + (f" · {f.camera}" if f.camera else "")
        return ImageRecord(id=self._name(Path(f.path)), image=f.path, captions=(note,))

    def _hits(self, found: list[LibraryHit]) -> list[Hit]:
        from core.search.retriever import Hit

        return [Hit(rank=h.rank, score=h.score, record=self.record(h.file), path=h.path) for h in found]

    def changed(self) -> bool:
        """Whether the catalogue moved on since this was opened (another process updated the library)."""
        return self.searcher.changed()

    def catch_up(self) -> bool:
        """The index (and the folders) brought up to date in place (see ``LibrarySearcher.catch_up``); not
        during a search."""
        if not self.searcher.catch_up():
            return False
        self.roots = [Path(r) for r in self.searcher.lib.catalogue.roots()]
        return True

    def reopen(self, reporter: Reporter) -> LibraryRetriever:
        """The library opened again as it is now, with the same model when it is still the library's."""
        from core.search.library_search import LibrarySearcher

        return LibraryRetriever(LibrarySearcher.open(self.searcher.name, reporter, lm=self.searcher.lm))

    def close(self) -> None:
        self.searcher.close()

    def browse_view(self) -> LibraryFiles:
        return LibraryFiles(self)

    def search_text(self, query: str, k: int = 10, filters: SearchFilters | None = None) -> list[Hit]:
        return self._hits(self._search(self.searcher.query_vector(query), k, filters or SearchFilters()))

    def image_to_image(self, image: str, k: int = 10, filters: SearchFilters | None = None) -> list[Hit]:
        return self._hits(self._search(self.searcher.image_vector(image), k, filters or SearchFilters()))

    def _search(self, vector: np.ndarray, k: int, options: SearchFilters) -> list[LibraryHit]:
        return self.searcher.search_vector(vector, k, options.filters)

    def duplicates(self, threshold: float, reporter: Reporter) -> LibraryDuplicates:
        """The library's near-duplicate groups under the default rule with embedding ``threshold``."""
        from core.index.duplicates import DuplicateRule
        from core.library.duplicates import library_duplicates

        return library_duplicates(self.searcher.lib, DuplicateRule(threshold=threshold), True, reporter)

    def image_to_text(self, image: str, k: int = 10) -> list[Hit]:
        raise CapsearchError("a library has no captions to search", hint="use text→image or image→image")

    def text_to_text(self, query: str, k: int = 10) -> list[Hit]:
        raise CapsearchError("a library has no captions to search", hint="use text→image or image→image")

    def ground_truth(self, query: str) -> None:
        return None


class LibraryFiles:
    """A library seen by the Browse screen as a dataset with one split, ``all``: its readable files by
    path (read from the catalogue when the split is asked for)."""

    splits = ["all"]

    def __init__(self, retriever: LibraryRetriever) -> None:
        self.retriever = retriever
        self.name = retriever.dataset

    def split(self, name: str) -> list[ImageRecord]:
        files = self.retriever.searcher.lib.catalogue.files()
        return [self.retriever.record(f) for f in sorted(files, key=lambda f: f.path) if f.failed is None]

    def image_path(self, record: ImageRecord) -> Path:
        return Path(record.image)


def open_library(name: str, reporter: Reporter) -> LibraryRetriever:
    from core.search.library_search import LibrarySearcher

    return LibraryRetriever(LibrarySearcher.open(name, reporter))


def add_folder(
    name: str,
    folder: Path,
    reporter: Reporter,
    current: LibraryRetriever | None,
    model_name: str | None = None,
) -> tuple[UpdateStats, LibraryRetriever | None]:
    """Add ``folder`` to library ``name`` (made when new), bring the library up to date (cancellable:
    the core keeps every finished batch) and open it for searching (None while nothing is embedded).
    ``model_name`` as ``library add --model`` (default: the library's model, else the library default);
    ``current``'s loaded model is reused when it is the one to embed with."""
    from core.library.library import Library, add_folders
    from core.library.update import update

    with add_folders(name, [folder]) as lib:
        lm, model = _update_model(lib, current, reporter, model_name)
        stats = update(lib, lm, model, reporter)
    lib = Library.open(name)
    active = lib.active
    if active is None:
        lib.close()
        return stats, None
    if active.key != model.key:
        lib.close()
        return stats, open_library(name, reporter)
    from core.search.library_search import LibrarySearcher

    store = lib.store(active)
    return stats, LibraryRetriever(
        LibrarySearcher(lib, lm, active, store, lib.index(active, store, reporter))
    )


def _update_model(
    lib: Library, current: LibraryRetriever | None, reporter: Reporter, model_name: str | None
) -> tuple[LoadedModel, ModelKey]:
    """The model to embed with, as ``capsearch library add`` picks it: the library's, else the default."""
    from core.library.library import model_key
    from core.library.models import LIBRARY_PRECISION, default_library_model
    from core.models.loading import load_model

    target = lib.target if model_name is None else None
    if target is not None and current is not None and current.searcher.model.key == target.key:
        return current.searcher.lm, target
    name = model_name or (target.name if target is not None else default_library_model(reporter.log))
    lm = load_model(name, precision=target.precision if target is not None else LIBRARY_PRECISION)
    return lm, model_key(name, lm)
