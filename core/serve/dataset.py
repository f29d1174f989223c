"""A dataset split as the service searches it: a :class:`~core.search.retriever.Retriever` whose index files
are watched for a rebuild (:meth:`ServedDataset.changed`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from core.data.records import PreparedDataset
from core.directions import Direction
from core.errors import CapsearchError
from core.index.store import IndexKey, Side
from core.index.vector_index import VectorIndex
from core.models.loading import LoadedModel
from core.progress import Reporter
from core.search.retriever import Hit, Retriever
from core.serve import files
from core.serve.errors import NotFound
from core.serve.schemas import LIBRARY_FIELDS, SearchForm
from core.serve.served import ImageEncoder, Opener, Query, TextEncoder, normalised, urls

TARGETS = {"images": ("image",), "captions": ("text",), "both": ("image", "text")}


class ServedDataset:
    """One split of a prepared dataset (see :class:`~core.serve.served.Served`)."""

    def __init__(self, retriever: Retriever, index: str) -> None:
        self.retriever = retriever
        self.lm = retriever.lm
        self.index = index
        self.version = index_version(retriever)
        self._signature = index_signature(retriever)

    @classmethod
    def opener(cls, data: PreparedDataset, lm: LoadedModel, split: str, index: str) -> Opener:
        return lambda reporter: cls(
            Retriever.open(data, lm, split=split, index=index, reporter=reporter), index
        )

    @property
    def model_id(self) -> str:
        return self.retriever.model_id

    def describe(self) -> dict[str, Any]:
        r = self.retriever
        return {"model_id": r.model_id, "dataset": r.dataset, "split": r.split, "library": None}

    def check(self, params: SearchForm) -> None:
        r = self.retriever
        if (
            params.library is not None
            or params.dataset not in (None, r.dataset)
            or params.split not in (None, r.split)
        ):
            named = (
                f"library {params.library}"
                if params.library
                else f"{params.dataset or r.dataset}/{params.split or r.split}"
            )
            raise NotFound(f"this service searches {r.dataset}/{r.split}, not {named}")
        used = [n for n in LIBRARY_FIELDS if getattr(params, n) != SearchForm.model_fields[n].default]
        if used:
            raise CapsearchError(
                f"{', '.join(used)} filter photo library searches; this service searches dataset {r.dataset}",
                hint="serve a library (`capsearch serve --library NAME`) to filter by date, folder or camera",
            )

    def query_vector(self, query: Query, encode_text: TextEncoder, encode_image: ImageEncoder) -> np.ndarray:
        r = self.retriever
        if query.kind == "text":
            return r.query_vector(query.text, encode_text=encode_text, files=False)
        if query.kind == "image":
            return encode_image(query.data)
        if query.kind == "image_id":
            if not r.has_id(query.text):
                raise NotFound(f"no image with id {query.text!r} in {r.dataset}/{r.split}")
            return r.image_vector(query.text)
        return normalised(query.vector, r.lm.embed_dim)

    def search(self, vector: np.ndarray, params: SearchForm) -> dict[str, Any]:
        r = self.retriever
        lists = [
            _hits(r.search_vector(vector, t, params.k), params.min_score) for t in TARGETS[params.direction]
        ]
        direction = Direction.TEXT_TO_TEXT if params.direction == "captions" else Direction.TEXT_TO_IMAGE
        return {
            "dataset": r.dataset,
            "split": r.split,
            "index": r.index_kind_of(direction),
            "hits": lists[0],
            "caption_hits": lists[1] if len(lists) > 1 else None,
        }

    def file(self, image_id: str) -> Path:
        return files.image_file(self.retriever, image_id)

    def datasets(self) -> list[dict[str, Any]]:
        """``/v1/datasets``: this split, its size and index kinds."""
        r = self.retriever
        return [
            {
                "name": r.dataset,
                "split": r.split,
                "images": r.size,
                "captions": r.caption_count,
                "image_index_kind": r.image_index.kind,
                "caption_index_kind": r.caption_index.kind if r.caption_index is not None else "none",
            }
        ]

    def changed(self) -> bool:
        """Whether the index files were rebuilt since they were opened."""
        return index_signature(self.retriever) != self._signature

    def reopen(self, reporter: Reporter) -> ServedDataset:
        r = self.retriever
        return ServedDataset(
            Retriever.open(r.data, r.lm, split=r.split, index=self.index, reporter=reporter), self.index
        )

    def close(self) -> None:
        """Nothing to release: the indexes are in memory."""


def _hits(hits: list[Hit], min_score: float | None) -> list[dict[str, Any]]:
    out = []
    for hit in hits:
        if min_score is not None and hit.score < min_score:
            continue
        d = hit.to_dict()
        del d["path"]
        out.append({**d, **urls(hit.record.id)})
    return out


def index_version(r: Retriever) -> str:
    """The content of the served indexes: the model id and the digests their metadata records."""
    parts = [r.model_id, r.image_index.kind, str(r.image_index.meta.get("vectors_sha256"))]
    parts.append(str(r.image_index.meta.get("faiss_sha256")))
    if r.caption_index is not None:
        parts += [
            str(r.caption_index.meta.get("vectors_sha256")),
            str(r.caption_index.meta.get("faiss_sha256")),
        ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def index_files(r: Retriever) -> list[Path]:
    """The metadata files of the served indexes (a rebuild replaces them)."""
    out = []
    sides: list[tuple[Side, VectorIndex | None]] = [("images", r.image_index), ("captions", r.caption_index)]
    for side, index in sides:
        if index is not None:
            out.append(
                IndexKey(r.model_id, r.dataset, r.split, side, r.lm.precision).folder(index.spec)
                / "index.json"
            )
    return out


def index_signature(r: Retriever) -> tuple[int, ...]:
    """Modification times of the served index files."""
    return tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in index_files(r))
