"""A photo library as the service searches it: a :class:`~core.search.library_search.LibrarySearcher`, caught
up (or reopened) when the catalogue's generation moves on (a ``library update`` or ``--watch`` in another
process commits).

Clients never name files on this machine: image ids are catalogue ids, and a query term is an image only
when it names a file the library holds (an absolute path, or a path under one of its folders), whose stored
vector is used. A file is served only when it is catalogued, readable and still the file the catalogue
describes (:meth:`ServedLibrary.file`).
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import CapsearchError
from core.library.filters import Filters, parse_date
from core.models.loading import LoadedModel
from core.progress import Reporter
from core.search.library_search import LibraryHit, LibrarySearcher
from core.search.query import combine, parse_query
from core.serve.errors import NotFound
from core.serve.schemas import SearchForm
from core.serve.served import ImageEncoder, Opener, Query, TextEncoder, normalised, urls


class ServedLibrary:
    """One library (see :class:`~core.serve.served.Served`). Its catalogue connection is used by one request
    thread at a time (:attr:`_lock`); the index searches run under the same lock, in milliseconds."""

    def __init__(self, searcher: LibrarySearcher, device: str | None = None) -> None:
        self.searcher = searcher
        self.lm = searcher.lm
        self.device = device
        self.roots = [Path(root) for root in searcher.lib.catalogue.roots()]  # resolved when added
        self._lock = threading.Lock()

    @classmethod
    def opener(cls, name: str | None, device: str | None = None, lm: LoadedModel | None = None) -> Opener:
        return lambda reporter: cls(LibrarySearcher.open(name, reporter, device, lm), device)

    @property
    def name(self) -> str:
        return self.searcher.name

    @property
    def version(self) -> str:
        return f"{self.searcher.model.key}@{self.searcher.generation}"

    @property
    def model_id(self) -> str:
        return self.searcher.model_id

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "dataset": None, "split": None, "library": self.name}

    def check(self, params: SearchForm) -> None:
        if params.dataset is not None or params.split is not None or params.library not in (None, self.name):
            named = params.library or "/".join(p for p in (params.dataset, params.split) if p)
            raise NotFound(f"this service searches library {self.name}, not {named}")
        if params.direction != "images":
            raise CapsearchError(
                f"a library has no captions: direction={params.direction} needs a dataset",
                hint="search the images (direction=images)",
            )

    # -- query vectors ----------------------------------------------------------------------------------
    def _held(self, path: str) -> int | None:
        """The id of the catalogued file at ``path`` when the index holds its vector."""
        row = self.searcher.lib.catalogue.file_by_path(os.path.normpath(path))
        return row.id if row is not None and self.searcher.index.holds(row.id) else None

    def _term_file(self, term: str) -> Path | None:
        """An image term: a file of the library, by absolute path or by path under one of its folders."""
        candidates = [term] if os.path.isabs(term) else [str(root / term) for root in self.roots]
        for candidate in candidates:
            if self._held(candidate) is not None:
                return Path(os.path.normpath(candidate))
        return None

    def _stored_vector(self, path: Path) -> np.ndarray:
        id_ = self._held(str(path))
        if id_ is None:
            raise NotFound(f"{str(path)!r} left the library while the query was read")
        return self.searcher.index.vectors_of(np.array([id_], np.int64))[0]

    def query_vector(self, query: Query, encode_text: TextEncoder, encode_image: ImageEncoder) -> np.ndarray:
        if query.kind == "image":
            return encode_image(query.data)
        if query.kind == "embedding":
            return normalised(query.vector, self.lm.embed_dim)
        if query.kind == "text":
            with self._lock:  # the texts are encoded outside it, in micro-batches with other requests'
                terms = parse_query(query.text, self._term_file)
                stored = {t.image: self._stored_vector(t.image) for t in terms if t.image is not None}
            return combine(terms, encode_text, stored.__getitem__)
        with self._lock:
            id_ = _file_id(query.text)
            if id_ is None or not self.searcher.index.holds(id_):
                raise NotFound(f"no photo with id {query.text!r} in library {self.name}")
            return self.searcher.index.vectors_of(np.array([id_], np.int64))[0]

    # -- search -----------------------------------------------------------------------------------------
    def search(self, vector: np.ndarray, params: SearchForm) -> dict[str, Any]:
        filters = Filters(
            after=parse_date(params.after) if params.after else None,
            before=parse_date(params.before) if params.before else None,
            folder=_folder(params.folder) if params.folder else None,
            camera=params.camera,
            min_score=params.min_score,
            sort=params.sort,
            dedup=params.dedup,
        )
        with self._lock:
            hits = self.searcher.search_vector(vector, params.k, filters)
        return {
            "library": self.name,
            "dataset": None,
            "split": None,
            "index": self.searcher.index_kind,
            "hits": [_hit(h) for h in hits],
            "caption_hits": None,
        }

    def libraries(self) -> list[dict[str, Any]]:
        """``/v1/libraries``: this library, its size, index kind and folders."""
        return [
            {
                "name": self.name,
                "photos": self.searcher.size,
                "index_kind": self.searcher.index_kind,
                "generation": self.searcher.generation,
                "folders": [str(root) for root in self.roots],
            }
        ]

    def file(self, image_id: str) -> Path:
        """The catalogued file of ``image_id`` while it is the file the catalogue describes: under one of the
        library's folders (a symlinked file there is followed, as the scan followed it) with the size and
        modification time catalogued. A file replaced or edited since is not served until the next update
        has looked at it (its hits and vectors describe the old one)."""
        missing = NotFound(f"no photo with id {image_id!r} in library {self.name}")
        id_ = _file_id(image_id)
        if id_ is None:
            raise missing
        with self._lock:
            row = self.searcher.lib.catalogue.files_by_id([id_]).get(id_)
        if row is None or row.failed is not None:
            raise missing
        path = Path(os.path.normpath(row.path))
        if not any(path.is_relative_to(root) for root in self.roots):
            raise missing
        try:
            st = path.stat()
        except OSError as exc:  # gone, a symlink loop
            raise missing from exc
        if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (row.size, row.mtime_ns):
            raise NotFound(
                f"photo {image_id} of library {self.name} changed on disk since it was catalogued",
                hint=f"it is served again once `capsearch library update {self.name}` has looked at it",
            )
        return path

    # -- life -------------------------------------------------------------------------------------------
    def changed(self) -> bool:
        """Whether the catalogue has moved on (files added, changed or removed, another model active)."""
        with self._lock:
            return self.searcher.changed()

    def reopen(self, reporter: Reporter) -> ServedLibrary:
        """This library caught up in place (only what changed is added or removed, between two searches),
        else, after a model change or past the exact/HNSW crossover, opened again."""
        with self._lock:
            if self.searcher.catch_up():
                self.roots = [Path(root) for root in self.searcher.lib.catalogue.roots()]
                return self
        return ServedLibrary(LibrarySearcher.open(self.name, reporter, self.device, self.lm), self.device)

    def close(self) -> None:
        with self._lock:
            self.searcher.close()


def _file_id(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None


def _folder(text: str) -> str:
    if not os.path.isabs(text):
        raise CapsearchError(
            f"folder must be an absolute path, got {text!r}", hint="e.g. /home/me/Pictures/2024"
        )
    return str(Path(text).resolve())


def _hit(hit: LibraryHit) -> dict[str, Any]:
    image_id = str(hit.file.id)
    return {**hit.to_dict(), "id": image_id, "caption": None, "caption_index": None, **urls(image_id)}
