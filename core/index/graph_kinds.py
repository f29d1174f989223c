"""The kinds without partitions: exact (``IndexFlatIP``), HNSW over float vectors (``IndexHNSWFlat``) and
HNSW over 8-bit scalar-quantised vectors (``IndexHNSWSQ``, a quarter of the vector memory).

None of them stores ids, so a caller's ids go through ``IndexIDMap2``. Exact removes for real; an HNSW
graph cannot drop a node, so removals are tombstones (:mod:`core.index.mutable`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import faiss

from core.index.kind_base import IndexSpec, Updates, inner, param, with_selector

M_HELP = "HNSW M: graph links per node (more: better recall, more memory)"
EFC_HELP = "HNSW efConstruction: candidate list size while building (more: better graph, slower build)"
EFS_HELP = "HNSW efSearch: candidate list size per query (more: better recall, slower queries)"
# Training sample of the scalar quantiser (per-dimension min/max): far more than it needs.
SQ_TRAIN = 20_000


@dataclass(frozen=True)
class ExactSpec(IndexSpec):
    """Brute-force inner product over every vector: the reference, exact by construction."""

    kind: ClassVar[str] = "exact"
    title: ClassVar[str] = "exact (IndexFlatIP)"

    def make(self, dim: int) -> faiss.Index:
        return faiss.IndexFlatIP(dim)

    def bytes_per_vector(self, dim: int) -> float:
        return 4.0 * dim

    def apply_knob(self, index: faiss.Index) -> None:
        return None

    def search_parameters(self, selector: faiss.IDSelector | None) -> faiss.SearchParameters:
        api: Any = faiss
        return with_selector(api.SearchParameters(), selector)


@dataclass(frozen=True)
class HNSWSpec(IndexSpec):
    """HNSW graph over the float vectors."""

    kind: ClassVar[str] = "hnsw"
    title: ClassVar[str] = "HNSW (IndexHNSWFlat)"
    knob_name: ClassVar[str | None] = "ef_search"
    updates: ClassVar[Updates] = "tombstones"

    m: int = param(16, 2, 256, M_HELP)
    ef_construction: int = param(200, 1, 4096, EFC_HELP)
    ef_search: int = param(100, 1, 4096, EFS_HELP)

    def label(self) -> str:  # kept from before the registry, so cached indexes keep their folders
        return f"{self.kind}-m{self.m}-efc{self.ef_construction}"

    def make(self, dim: int) -> faiss.Index:
        index = faiss.IndexHNSWFlat(dim, self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def links_bytes(self) -> float:
        # level 0 holds 2M int32 links per node; upper levels add about 1/(M-1) of that again, plus levels
        # and offsets bookkeeping (~12 bytes).
        return 4.0 * 2 * self.m * (1 + 1 / max(self.m - 1, 1)) + 12

    def bytes_per_vector(self, dim: int) -> float:
        return 4.0 * dim + self.links_bytes()

    def apply_knob(self, index: faiss.Index) -> None:
        inner(index).hnsw.efSearch = self.ef_search

    def search_parameters(self, selector: faiss.IDSelector | None) -> faiss.SearchParameters:
        api: Any = faiss
        return with_selector(api.SearchParametersHNSW(efSearch=self.ef_search), selector)


@dataclass(frozen=True)
class HNSWSQSpec(HNSWSpec):
    """HNSW graph over 8-bit scalar-quantised vectors (trained per-dimension ranges)."""

    kind: ClassVar[str] = "hnsw-sq"
    title: ClassVar[str] = "HNSW over 8-bit scalar quantisation (IndexHNSWSQ)"

    def make(self, dim: int) -> faiss.Index:
        api: Any = faiss  # the stubs type the quantiser argument as a class, FAISS takes its enum value
        index = api.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def train_count(self, count: int) -> int:
        return min(count, SQ_TRAIN)

    def bytes_per_vector(self, dim: int) -> float:
        return 1.0 * dim + self.links_bytes()

    def fixed_bytes(self, dim: int) -> int:
        return 8 * dim
