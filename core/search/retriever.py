"""The retrieval facade: one object that searches a dataset split with a model, in all four directions.

``Retriever.open`` loads the model, the split's cached embeddings and cached FAISS indexes over its images
and its captions; then text->image, image->text, image->image and text->text searches return ranked
:class:`Hit` objects. Index rows are the split's records (images) and its captions in order, so failed
images (zero embeddings) stay in the index and are filtered out of the hits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from core.data.records import ImageRecord, PreparedDataset, load_dataset
from core.directions import Direction
from core.embed.cache import SplitEmbeddings
from core.embed.engine import encode_image_query, encode_text_query
from core.errors import DatasetError
from core.index.split_indexes import split_indexes
from core.index.vector_index import IndexSpec, VectorIndex
from core.models.loading import LoadedModel, load_model
from core.progress import Reporter, ensure
from core.search.query import QueryError, combine, image_file, parse_query

TextEncoder = Callable[[str], np.ndarray]


@dataclass(frozen=True)
class Hit:
    """One search result: its 1-based rank and score; for caption results also the caption and its index."""

    rank: int
    score: float
    record: ImageRecord
    path: Path
    caption: str | None = None
    caption_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The hit as JSON: rank, score (6 decimals), image id and path, caption and its row."""
        return {
            "rank": self.rank,
            "score": round(self.score, 6),
            "id": self.record.id,
            "path": str(self.path),
            "caption": self.caption,
            "caption_index": self.caption_index,
        }


class Retriever:
    """Search one split of a prepared dataset with one model; build with :meth:`open`."""

    def __init__(
        self,
        lm: LoadedModel,
        data: PreparedDataset,
        split: str,
        embeddings: SplitEmbeddings,
        image_index: VectorIndex,
        caption_index: VectorIndex | None,
    ) -> None:
        self.lm = lm
        self.data = data
        self.split = split
        self.embeddings = embeddings
        self.image_index = image_index
        self.caption_index = caption_index
        self.records: list[ImageRecord] = embeddings.records
        self._row_of_id = {rec.id: i for i, rec in enumerate(self.records)}
        self._row_of_path = {data.image_path(rec).resolve(): i for i, rec in enumerate(self.records)}
        failed_ids = {image_id for image_id, _ in embeddings.failed}
        self._failed_rows = {i for i, rec in enumerate(self.records) if rec.id in failed_ids}
        self._captions_of_text: dict[str, list[int]] = {}
        for j, text in enumerate(embeddings.captions):
            self._captions_of_text.setdefault(text, []).append(j)
        self._encode_text = lru_cache(maxsize=256)(lambda text: encode_text_query(lm, text))

    @classmethod
    def open(
        cls,
        dataset: str | Path | PreparedDataset,
        model: str | LoadedModel,
        pretrained: str | None = None,
        split: str = "test",
        index: IndexSpec | str = "auto",
        reporter: Reporter | None = None,
        device: str | None = None,
    ) -> Retriever:
        """Load (or build and cache) everything needed to search ``split`` of ``dataset`` with ``model``."""
        reporter = ensure(reporter)
        data = dataset if isinstance(dataset, PreparedDataset) else load_dataset(dataset)
        lm = model if isinstance(model, LoadedModel) else load_model(model, pretrained, device=device)
        indexes = split_indexes(lm, data, split, index, reporter)
        embeddings = indexes.embeddings
        if not embeddings.records:
            raise DatasetError(f"split {split!r} of dataset {data.name!r} has no images")
        if len(embeddings.failed) == len(embeddings.records):
            image_id, reason = embeddings.failed[0]
            raise DatasetError(
                f"none of the {len(embeddings.records)} images of {data.name}/{split} could be read "
                f"(the first, {image_id}: {reason})",
                hint=f"check the image folder {data.root}; if the images moved, prepare the dataset again",
            )
        captions = indexes.captions.index if indexes.captions is not None else None
        return cls(lm, data, split, indexes.embeddings, indexes.images.index, captions)

    # -- properties -----------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.lm.model_id

    @property
    def dataset(self) -> str:
        """The dataset's name (the prepared dataset itself is :attr:`data`)."""
        return self.data.name

    @property
    def index_kind(self) -> str:
        """Kind of the image index (``exact`` or ``hnsw``)."""
        return self.image_index.kind

    @property
    def size(self) -> int:
        """Number of images in the searched gallery (vectors in the image index)."""
        return self.image_index.count

    def index_kind_of(self, direction: Direction) -> str:
        """Kind of the index a search in ``direction`` goes through."""
        index = self.image_index if direction.target == "image" else self.caption_index
        return index.kind if index is not None else "none"

    @property
    def caption_count(self) -> int:
        return self.caption_index.count if self.caption_index is not None else 0

    def image_path(self, record: ImageRecord) -> Path:
        return self.data.image_path(record)

    # -- query embedding ------------------------------------------------------------------------------
    def _resolve_id(self, term: str) -> Path | None:
        """An image term that is the id of an image of this split."""
        if term in self._row_of_id:
            return self.data.image_path(self.records[self._row_of_id[term]]).resolve()
        return None

    def _resolve_image(self, term: str) -> Path | None:
        """An image term: the id of an image of this split, or an existing image file."""
        found = self._resolve_id(term)
        return found if found is not None else image_file(term)

    def has_id(self, image_id: str) -> bool:
        return image_id in self._row_of_id

    def record_of(self, image_id: str) -> ImageRecord | None:
        """The record of an image of this split by id (None for any other id)."""
        row = self._row_of_id.get(image_id)
        return None if row is None else self.records[row]

    def _image_vector(self, path: Path) -> np.ndarray:
        row = self._row_of_path.get(Path(path).resolve())
        if row is not None and row not in self._failed_rows:
            return self.embeddings.image_emb[row]
        return encode_image_query(self.lm, path)

    def query_vector(
        self, query: str, encode_text: TextEncoder | None = None, files: bool = True
    ) -> np.ndarray:
        """The embedding of a text query: a split caption verbatim, else parsed as query arithmetic.

        ``encode_text`` replaces the built-in (cached) text encoder, e.g. with a micro-batching one;
        ``files=False`` resolves image terms to this split's image ids only, never to files on this
        machine (for queries from other programs).
        """
        encode = encode_text or self._encode_text
        if query in self._captions_of_text:
            return encode(query)
        resolve = self._resolve_image if files else self._resolve_id
        return combine(parse_query(query, resolve), encode, self._image_vector)

    def image_vector(self, image: str | Path) -> np.ndarray:
        """The embedding of an image given as an id of this split or a file path."""
        path = self._resolve_image(str(image))
        if path is None:
            raise QueryError(
                f"{str(image)!r} is neither an image of {self.dataset}/{self.split} nor an image file",
                hint="give a dataset image id (see `capsearch search --json` output) or a path to a picture",
            )
        return self._image_vector(path)

    # -- searches -------------------------------------------------------------------------------------
    def _image_hits(self, vector: np.ndarray, k: int) -> list[Hit]:
        scores, rows = self.image_index.search(vector, k + len(self._failed_rows))
        hits: list[Hit] = []
        for score, row in zip(scores[0].tolist(), rows[0].tolist(), strict=True):
            if row < 0 or row in self._failed_rows:
                continue
            rec = self.records[row]
            hits.append(Hit(rank=len(hits) + 1, score=score, record=rec, path=self.data.image_path(rec)))
            if len(hits) == k:
                break
        return hits

    def _caption_hits(self, vector: np.ndarray, k: int) -> list[Hit]:
        if self.caption_index is None:
            raise DatasetError(f"split {self.split!r} of dataset {self.dataset!r} has no captions to search")
        scores, rows = self.caption_index.search(vector, k)
        hits: list[Hit] = []
        for score, j in zip(scores[0].tolist(), rows[0].tolist(), strict=True):
            if j < 0:
                continue
            rec = self.records[int(self.embeddings.caption_image[j])]
            hits.append(
                Hit(
                    rank=len(hits) + 1,
                    score=score,
                    record=rec,
                    path=self.data.image_path(rec),
                    caption=self.embeddings.captions[j],
                    caption_index=j,
                )
            )
        return hits

    def search_vector(self, vector: np.ndarray, target: str, k: int) -> list[Hit]:
        """The ``k`` best images (``target="image"``) or captions (``"text"``) for a query embedding."""
        return self._image_hits(vector, k) if target == "image" else self._caption_hits(vector, k)

    def search_text(self, query: str, k: int = 10) -> list[Hit]:
        """Text -> image; the query may use arithmetic (``dog + snow - night``, ``2:dog``, image paths)."""
        return self._image_hits(self.query_vector(query), k)

    def text_to_text(self, query: str, k: int = 10) -> list[Hit]:
        """Text -> caption (hits carry the caption and the image it describes)."""
        return self._caption_hits(self.query_vector(query), k)

    def image_to_text(self, image: str | Path, k: int = 10) -> list[Hit]:
        """Image (a dataset image id or any image file) -> captions."""
        return self._caption_hits(self.image_vector(image), k)

    def image_to_image(self, image: str | Path, k: int = 10) -> list[Hit]:
        """Image -> images; a gallery image finds itself first."""
        return self._image_hits(self.image_vector(image), k)

    def search(self, direction: Direction, query: str, k: int = 10) -> list[Hit]:
        """The search in ``direction``: ``query`` is text for text queries, an image id or path otherwise."""
        search = {
            Direction.TEXT_TO_IMAGE: self.search_text,
            Direction.TEXT_TO_TEXT: self.text_to_text,
            Direction.IMAGE_TO_TEXT: self.image_to_text,
            Direction.IMAGE_TO_IMAGE: self.image_to_image,
        }[direction]
        return search(query, k)

    def ground_truth(self, query: str) -> tuple[ImageRecord, int] | None:
        """When ``query`` is one of the split's captions: its image and that image's rank for this query.

        The rank follows the evaluation's rule (1 + images scoring at least as high, ties against the
        query) over the gallery without failed images. A caption shared by several images gives the best
        ranked of them. None for any other query.
        """
        rows = {int(self.embeddings.caption_image[j]) for j in self._captions_of_text.get(query, ())}
        rows -= self._failed_rows
        if not rows:
            return None
        scores = self.embeddings.image_emb @ self.query_vector(query)
        usable = np.ones(len(scores), dtype=bool)
        usable[list(self._failed_rows)] = False
        best_row, best_rank = -1, len(scores) + 1
        for row in sorted(rows):
            wrong = usable.copy()
            wrong[list(rows)] = False
            rank = 1 + int(np.count_nonzero(wrong & (scores >= scores[row])))
            if rank < best_rank:
                best_row, best_rank = row, rank
        return self.records[best_row], best_rank
