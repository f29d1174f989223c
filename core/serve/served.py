"""What a service searches: a dataset split (:mod:`core.serve.dataset`) or a photo library
(:mod:`core.serve.library`), behind one :class:`Served` interface the engine and the routes use."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.models.loading import LoadedModel
from core.progress import Reporter
from core.serve.errors import ServiceError
from core.serve.schemas import SearchForm

TextEncoder = Callable[[str], np.ndarray]
ImageEncoder = Callable[[bytes], np.ndarray]


@dataclass(frozen=True)
class Query:
    """One search query: ``kind`` is text, image (decoded upload bytes), image_id or embedding."""

    kind: str
    text: str = ""
    data: bytes = b""
    vector: tuple[float, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the query in the result cache (uploads and vectors by their digest)."""
        if self.kind in ("text", "image_id"):
            return self.kind, self.text
        raw = self.data if self.kind == "image" else np.asarray(self.vector, dtype=np.float32).tobytes()
        return self.kind, hashlib.sha256(raw).hexdigest()


class Served(Protocol):
    """A searchable collection, opened with one model. ``version`` names what it holds (the cache keys and
    ETags carry it); :meth:`changed` says when the collection on disk has moved on, and :meth:`reopen`
    gives it as it is now: itself brought up to date in place (a library's new and removed photos), or
    opened again (reusing ``lm`` where the model is the same)."""

    lm: LoadedModel

    @property
    def model_id(self) -> str: ...

    @property
    def version(self) -> str: ...

    def describe(self) -> dict[str, Any]:
        """``/readyz``'s fields: the model id and the dataset and split, or the library."""
        ...

    def check(self, params: SearchForm) -> None:
        """Refuse parameters that name another collection or do not apply to this one."""
        ...

    def query_vector(self, query: Query, encode_text: TextEncoder, encode_image: ImageEncoder) -> np.ndarray:
        """The normalised vector of ``query`` (texts and uploads through the given encoders)."""
        ...

    def search(self, vector: np.ndarray, params: SearchForm) -> dict[str, Any]:
        """The body fields that depend on the collection: names, ``index``, ``hits`` and ``caption_hits``."""
        ...

    def file(self, image_id: str) -> Path:
        """The image file of ``image_id``, resolved and inside the collection; else :class:`NotFound`."""
        ...

    def changed(self) -> bool: ...

    def reopen(self, reporter: Reporter) -> Served: ...

    def close(self) -> None: ...


Opener = Callable[[Reporter], Served]
"""Opens the collection to serve (in the engine's loading thread, reporting its progress)."""


def normalised(values: tuple[float, ...], dim: int) -> np.ndarray:
    """A raw query vector of the model's dimension, L2-normalised; refused when wrong or degenerate."""
    with np.errstate(over="ignore"):  # a value past float32's range becomes inf, refused below
        vector = np.asarray(values, dtype=np.float32)
    if vector.shape != (dim,):
        raise ServiceError(f"the embedding has {vector.size} values; the model's dimension is {dim}")
    norm = float(np.linalg.norm(vector)) if np.isfinite(vector).all() else float("nan")
    if not np.isfinite(norm) or norm < 1e-12:
        raise ServiceError("the embedding must be finite and not all zero")
    return vector / norm


def urls(image_id: str) -> dict[str, str]:
    """Where a hit's image and its thumbnail are fetched."""
    from urllib.parse import quote

    quoted = quote(image_id, safe="")
    return {"image_url": f"/v1/images/{quoted}", "thumbnail_url": f"/v1/thumbnails/{quoted}?size=256"}
