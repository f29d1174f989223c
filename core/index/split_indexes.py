"""The pipeline seam: a split's embeddings (cached) and the image and caption indexes over them (cached).

Index rows are the split's records (images) and its captions in order; caption row ``j`` has the id
``<image id>#<n>``, caption ``n`` (from 0) of image ``caption_image[j]``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from core.data.records import ImageRecord, PreparedDataset
from core.embed.cache import SplitEmbeddings, split_embeddings
from core.index.kind_base import IndexSpec
from core.index.store import IndexKey, Side, cached_index
from core.index.vector_index import VectorIndex
from core.models.loading import LoadedModel
from core.progress import Reporter, ensure


def caption_numbers(caption_image: np.ndarray | list[int]) -> list[int]:
    """For every caption row, its number among its image's captions (counting from 0 in row order)."""
    seen: dict[int, int] = {}
    out = []
    for row in np.asarray(caption_image).tolist():
        out.append(seen.get(row, 0))
        seen[row] = out[-1] + 1
    return out


def caption_ids(records: list[ImageRecord], caption_image: np.ndarray) -> list[str]:
    """``<image id>#<n>`` for every caption row (n counts that image's captions from 0)."""
    numbers = caption_numbers(caption_image)
    return [f"{records[row].id}#{n}" for row, n in zip(caption_image.tolist(), numbers, strict=True)]


@dataclass(frozen=True)
class SideIndex:
    """One side's index, whether it came from the cache, and the seconds it took to get it."""

    index: VectorIndex
    reused: bool
    seconds: float


@dataclass(frozen=True)
class SplitIndexes:
    """A split's embeddings with its image index and caption index (None for a split without captions)."""

    embeddings: SplitEmbeddings
    images: SideIndex
    captions: SideIndex | None

    def sides(self) -> dict[Side, SideIndex]:
        """The indexes by side name (``images``, then ``captions`` when there is one)."""
        out: dict[Side, SideIndex] = {"images": self.images}
        if self.captions is not None:
            out["captions"] = self.captions
        return out


def _side_index(
    vectors: np.ndarray,
    ids: list[str],
    key: IndexKey,
    spec: IndexSpec | str,
    reporter: Reporter,
    queries: np.ndarray | None,
) -> SideIndex:
    start = time.perf_counter()
    index, reused = cached_index(vectors, ids, key, spec, reporter, queries)
    return SideIndex(index, reused, round(time.perf_counter() - start, 4))


def index_embeddings(
    lm: LoadedModel,
    dataset: str,
    split: str,
    emb: SplitEmbeddings,
    spec: IndexSpec | str = "auto",
    reporter: Reporter | None = None,
) -> SplitIndexes:
    """The cached (or built) image and caption indexes of ``emb``, the embeddings of ``dataset``'s ``split``.

    ``auto`` tunes each side's knob on the other side's vectors: the queries each index answers.
    """
    reporter = ensure(reporter)

    def key(side: Side) -> IndexKey:
        return IndexKey(lm.model_id, dataset, split, side, lm.precision)

    texts = emb.caption_emb if len(emb.captions) else None
    images = _side_index(emb.image_emb, [r.id for r in emb.records], key("images"), spec, reporter, texts)
    captions = None
    if len(emb.captions):
        ids = caption_ids(emb.records, emb.caption_image)
        captions = _side_index(emb.caption_emb, ids, key("captions"), spec, reporter, emb.image_emb)
    return SplitIndexes(emb, images, captions)


def split_indexes(
    lm: LoadedModel,
    data: PreparedDataset,
    split: str,
    spec: IndexSpec | str = "auto",
    reporter: Reporter | None = None,
) -> SplitIndexes:
    """Embed ``split`` of ``data`` with ``lm`` (or reuse the cache), then index both sides (or reuse those)."""
    emb = split_embeddings(lm, data, split, reporter=reporter)
    return index_embeddings(lm, data.name, split, emb, spec, reporter)
