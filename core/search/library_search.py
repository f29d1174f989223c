"""Searching a photo library: text (with query arithmetic) or image queries, filters, ordering.

:meth:`LibrarySearcher.open` loads the library's active model and its index, caught up in memory with the
catalogue (a search never writes). Hits carry the file's path, date and camera; equal scores are ordered
by path, so results do not depend on the order files were added in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from core.embed.engine import encode_image_query, encode_text_query
from core.errors import IndexMismatchError
from core.index.duplicates import DuplicateRule, collapse_duplicates, find_duplicate_groups
from core.index.mutable import TIE_SLACK, MutableIndex
from core.library.catalogue import FileRow, ModelKey
from core.library.filters import Filters
from core.library.home import LibraryError, resolve_library
from core.library.library import Library
from core.library.vectors import VectorStore
from core.models.loading import LoadedModel, load_model
from core.progress import Reporter, ensure
from core.search.query import QueryError, combine, image_file, parse_query

DEDUP_FETCH = 4
"""With duplicates collapsed, this many candidates are ranked per result asked for, so that collapsing
still leaves ``k`` results when there are that many distinct photos among them."""


@dataclass(frozen=True)
class LibraryHit:
    """One library search result."""

    rank: int
    score: float
    file: FileRow

    @property
    def path(self) -> Path:
        return Path(self.file.path)

    def to_dict(self) -> dict[str, Any]:
        f = self.file
        return {
            "rank": self.rank,
            "score": round(self.score, 6),
            "id": f.id,
            "path": f.path,
            "taken": f.taken,
            "date": f.when,
            "camera": f.camera,
            "width": f.width,
            "height": f.height,
        }


class LibrarySearcher:
    """Search one library with its active model; build with :meth:`open`. ``generation``: the catalogue
    generation read before the index was caught up (the index holds at least that; -1 when unknown)."""

    def __init__(
        self,
        lib: Library,
        lm: LoadedModel,
        model: ModelKey,
        store: VectorStore,
        index: MutableIndex,
        generation: int = -1,
    ) -> None:
        self.lib, self.lm, self.model, self.store, self.index = lib, lm, model, store, index
        self.generation = generation
        self._encode_text = lru_cache(maxsize=256)(lambda text: encode_text_query(lm, text))

    @classmethod
    def open(
        cls,
        name: str | None = None,
        reporter: Reporter | None = None,
        device: str | None = None,
        lm: LoadedModel | None = None,
    ) -> LibrarySearcher:
        """Open library ``name`` (default: the default library) with its active model: ``lm`` when it is
        that model (a service reopening a changed library), else loaded."""
        reporter = ensure(reporter)
        lib = Library.open(resolve_library(name))
        generation = lib.catalogue.generation  # read first: a change committed while opening is seen later
        try:
            model = lib.embedded_model()
        except LibraryError:
            lib.close()
            raise
        if lm is None or (lm.model_id, lm.precision) != (model.model_id, model.precision):
            lm = load_model(model.name, device=device, precision=model.precision)
        if lm.model_id != model.model_id:
            lib.close()
            raise IndexMismatchError(
                f"library {lib.name!r} was embedded with {model.model_id}, but {model.name} is now {lm.model_id}",
                hint=f"re-embed it: `capsearch library update {lib.name} --model {model.name}`",
            )
        store = lib.store(model)
        return cls(lib, lm, model, store, lib.index(model, store, reporter), generation)

    def close(self) -> None:
        self.lib.close()

    def changed(self) -> bool:
        """Whether the catalogue moved on since the index was caught up (another process committed)."""
        return self.lib.catalogue.generation != self.generation

    def catch_up(self) -> bool:
        """Bring the index up to date with the catalogue in place, adding and removing only what changed;
        False, with nothing done, when that is not enough: the library now searches with another model, or
        has grown into another index kind (then open it again). Not concurrent with searches."""
        generation = self.lib.catalogue.generation  # read first, as in :meth:`open`
        if self.lib.active != self.model or not self.lib.matching_spec(self.index, self.model):
            return False
        self.lib.sync_index(self.index, self.model, self.store)
        self.generation = generation
        return True

    @property
    def name(self) -> str:
        return self.lib.name

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def size(self) -> int:
        return self.index.count

    @property
    def index_kind(self) -> str:
        return self.index.kind

    # -- query vectors ----------------------------------------------------------------------------------
    def _image_vector(self, path: Path) -> np.ndarray:
        """A library file's stored vector, else the image embedded now."""
        row = self.lib.catalogue.file_by_path(str(Path(path).resolve()))
        if row is not None and self.index.holds(row.id):
            return self.index.vectors_of(np.array([row.id]))[0]
        return encode_image_query(self.lm, path)

    def query_vector(self, query: str) -> np.ndarray:
        """A text query, with arithmetic (``dog + snow - night``, ``2:dog``, image file terms)."""
        return combine(parse_query(query, image_file), self._encode_text, self._image_vector)

    def image_vector(self, image: str | Path) -> np.ndarray:
        path = image_file(str(image))
        if path is None:
            raise QueryError(f"{str(image)!r} is not an image file", hint="give the path to a picture")
        return self._image_vector(path)

    # -- searches ---------------------------------------------------------------------------------------
    def search_vector(
        self, vector: np.ndarray, k: int = 10, filters: Filters | None = None
    ) -> list[LibraryHit]:
        """The best ``k`` files for ``vector`` that pass ``filters`` (ties by path), then ordered; with
        ``filters.dedup``, near-duplicates among ``DEDUP_FETCH * k`` candidates are collapsed first."""
        filters = filters or Filters()
        wanted = k * DEDUP_FETCH if filters.dedup else k
        allowed = filters.allowed_ids(self.lib.catalogue)
        scores, ids = self.index.search(vector, wanted + TIE_SLACK, allowed)
        rows = self.lib.catalogue.files_by_id(ids.tolist())
        found = [(float(s), rows[i]) for s, i in zip(scores.tolist(), ids.tolist(), strict=True) if i in rows]
        found.sort(key=lambda sr: (-sr[0], sr[1].path))
        hits = [LibraryHit(0, score, row) for score, row in found[:wanted]]
        if filters.dedup:
            hits = self.collapse_near_duplicates(hits)
        hits = hits[:k]
        if filters.min_score is not None:
            hits = [h for h in hits if h.score >= filters.min_score]
        if filters.sort == "date":
            hits.sort(key=lambda h: (-h.file.when, h.file.path))
        return [replace(hit, rank=rank) for rank, hit in enumerate(hits, start=1)]

    def collapse_near_duplicates(
        self, hits: list[LibraryHit], rule: DuplicateRule | None = None
    ) -> list[LibraryHit]:
        """``hits`` less all but the best-scored photo of each near-duplicate group (the grouping of
        ``capsearch library duplicates``: stored vectors, perceptual hashes and thumbnails, the default rule)."""
        if len(hits) < 2:
            return hits
        vectors = self.index.vectors_of(np.array([h.file.id for h in hits], np.int64))
        keys = [str(h.file.id) for h in hits]
        stored = self.lib.catalogue.thumbs_by_id(h.file.id for h in hits)
        hashes, thumbs = [h.file.phash for h in hits], [stored.get(h.file.id) for h in hits]
        groups = find_duplicate_groups(vectors, keys, rule or DuplicateRule(), hashes, thumbs)
        return collapse_duplicates(hits, groups, key=lambda h: str(h.file.id), score=lambda h: h.score)

    def search_text(self, query: str, k: int = 10, filters: Filters | None = None) -> list[LibraryHit]:
        return self.search_vector(self.query_vector(query), k, filters)

    def image_to_image(
        self, image: str | Path, k: int = 10, filters: Filters | None = None
    ) -> list[LibraryHit]:
        return self.search_vector(self.image_vector(image), k, filters)
