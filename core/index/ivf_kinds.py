"""The partitioned kinds: IVF-Flat (``IndexIVFFlat``) and IVF-PQ with an OPQ rotation
(``OPQ<m>,IVF<nlist>,PQ<m>x<nbits>``). Both hold a caller's ids themselves and remove them for real.

``nlist`` 0 means "from the vector count" (:func:`auto_nlist`), fixed by :meth:`IndexSpec.resolve`. Both
train on a seeded sample of the vectors (:meth:`train_count` rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import faiss

from core.index.kind_base import IndexSpec, IndexSpecError, inner, param, with_selector

NLIST_HELP = "IVF lists (0: about 4*sqrt(vectors), at least 39 training vectors per list)"
NPROBE_HELP = "IVF nprobe: lists scanned per query (more: better recall, slower queries)"
PQ_M_HELP = "PQ sub-quantisers: bytes per vector at 8 bits (must divide the dimension)"
NBITS_HELP = "bits per PQ sub-quantiser code"
OPQ_HELP = "1: learn an OPQ rotation before PQ (better recall), 0: plain PQ"
# k-means wants at least 39 points per centroid (FAISS warns below); we draw up to 64 per centroid, at most
# TRAIN_MAX vectors in all (autofaiss caps its training sample the same way).
MIN_PER_LIST = 39
TRAIN_PER_LIST = 64
TRAIN_MAX = 200_000
# Fewer k-means / OPQ iterations than FAISS's defaults (25 for PQ, 50 for OPQ with a first PQ fit of 40):
# on this shared 2-vCPU machine the defaults made OPQ16,IVF512,PQ16 train for minutes on 20k vectors
# (k-means over 2-4-dimensional sub-vectors is slow in FAISS); see artifacts/results/index_kinds.json.
PQ_NITER = 10
OPQ_NITER = 5


def auto_nlist(count: int) -> int:
    """About ``4 * sqrt(count)`` lists, but never fewer than 39 vectors per list (autofaiss's rule)."""
    return max(1, min(int(4 * math.sqrt(max(count, 1))), count // MIN_PER_LIST))


def ivf_of(index: faiss.Index) -> Any:
    """The ``IndexIVF`` inside ``index`` (through an OPQ pre-transform or an id map)."""
    return faiss.downcast_index(faiss.extract_index_ivf(inner(index)))


@dataclass(frozen=True)
class IVFFlatSpec(IndexSpec):
    """Inverted lists of full float vectors around ``nlist`` k-means centroids."""

    kind: ClassVar[str] = "ivf-flat"
    title: ClassVar[str] = "IVF-Flat (IndexIVFFlat)"
    knob_name: ClassVar[str | None] = "nprobe"
    native_ids: ClassVar[bool] = True

    nlist: int = param(0, 0, 1 << 20, NLIST_HELP)
    nprobe: int = param(16, 1, 1 << 20, NPROBE_HELP)

    def validate(self) -> None:
        if self.nlist and self.nprobe > self.nlist:
            raise IndexSpecError(f"{self.kind} nprobe {self.nprobe} exceeds nlist {self.nlist}")

    def resolve(self, count: int, dim: int | None = None) -> IndexSpec:
        if self.nlist:
            return self
        nlist = auto_nlist(count)
        return replace(self, nlist=nlist, nprobe=min(self.nprobe, nlist))

    def knob_range(self) -> tuple[int, int]:
        return 1, self._nlist()

    def _nlist(self) -> int:
        if not self.nlist:
            raise IndexSpecError(
                f"{self.kind} nlist is unset", hint="resolve the spec for a vector count first"
            )
        return self.nlist

    def make(self, dim: int) -> faiss.Index:
        index = faiss.index_factory(dim, f"IVF{self._nlist()},Flat", faiss.METRIC_INNER_PRODUCT)
        ivf_of(index).nprobe = self.nprobe
        return index

    def train_count(self, count: int) -> int:
        return min(count, max(TRAIN_PER_LIST * self._nlist(), 1), TRAIN_MAX)

    def bytes_per_vector(self, dim: int) -> float:
        return 4.0 * dim + 8  # the vector and its int64 id in a list

    def fixed_bytes(self, dim: int) -> int:
        return 4 * dim * (self.nlist or 1)

    def apply_knob(self, index: faiss.Index) -> None:
        ivf_of(index).nprobe = min(self.nprobe, ivf_of(index).nlist)

    def search_parameters(self, selector: faiss.IDSelector | None) -> faiss.SearchParameters:
        api: Any = faiss
        return with_selector(api.SearchParametersIVF(nprobe=self.nprobe), selector)


@dataclass(frozen=True)
class IVFPQSpec(IVFFlatSpec):
    """IVF with product-quantised codes (``pq_m`` bytes per vector at 8 bits), after an OPQ rotation."""

    kind: ClassVar[str] = "ivf-pq"
    title: ClassVar[str] = "OPQ + IVF-PQ (IndexIVFPQ)"

    pq_m: int = param(16, 1, 256, PQ_M_HELP)
    nbits: int = param(8, 4, 12, NBITS_HELP)
    opq: int = param(1, 0, 1, OPQ_HELP)

    def factory(self, dim: int) -> str:
        """The FAISS index-factory string of this spec for ``dim``."""
        if dim % self.pq_m:
            raise IndexSpecError(
                f"ivf-pq pq_m {self.pq_m} does not divide the dimension {dim}",
                hint="choose pq_m among the divisors of the dimension (e.g. 8, 16, 32, 64)",
            )
        rotation = f"OPQ{self.pq_m}," if self.opq else ""
        return f"{rotation}IVF{self._nlist()},PQ{self.pq_m}x{self.nbits}"

    def make(self, dim: int) -> faiss.Index:
        index = faiss.index_factory(dim, self.factory(dim), faiss.METRIC_INNER_PRODUCT)
        ivf = ivf_of(index)
        ivf.nprobe = self.nprobe
        ivf.pq.cp.niter = PQ_NITER
        ivf.do_polysemous_training = False  # the factory turns it on; we never search with Hamming filtering
        if self.opq:
            wrapper: Any = faiss.downcast_index(index)
            rotation: Any = faiss.downcast_VectorTransform(wrapper.chain.at(0))
            rotation.niter = OPQ_NITER
            rotation.niter_pq_0 = PQ_NITER  # the first PQ fit inside OPQ (FAISS default 40)
        return index

    def train_count(self, count: int) -> int:
        codebook = (MIN_PER_LIST + 1) * (1 << self.nbits)  # each PQ codebook is a k-means too
        return min(count, max(TRAIN_PER_LIST * self._nlist(), codebook), TRAIN_MAX)

    def bytes_per_vector(self, dim: int) -> float:
        return self.pq_m * self.nbits / 8 + 8

    def fixed_bytes(self, dim: int) -> int:
        rotation = 4 * dim * dim if self.opq else 0
        codebooks = 4 * dim * (1 << self.nbits)
        return rotation + codebooks + 4 * dim * (self.nlist or 1)

    def search_parameters(self, selector: faiss.IDSelector | None) -> faiss.SearchParameters:
        params = super().search_parameters(selector)
        if not self.opq:
            return params
        api: Any = faiss
        wrapped = api.SearchParametersPreTransform(index_params=params)
        wrapped.index_params_ref = params  # keep the inner parameters alive with the wrapper
        return wrapped
