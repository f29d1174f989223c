"""``auto``: choose an index kind by vector count and a memory budget, then tune its search-time knob.

The choice follows autofaiss's order (exact, then graph, then IVF, then OPQ+IVF+PQ), taking the first
kind whose estimated memory (:meth:`IndexSpec.memory_bytes`) fits ``max_memory``:

1. exact, up to :data:`AUTO_EXACT_MAX` vectors (measured: below it exact search is as fast as HNSW);
2. HNSW over floats, then HNSW over 8-bit codes, up to :data:`HNSW_MAX` vectors (graph build time grows
   past it: autofaiss also leaves graphs for IVF on large collections);
3. IVF-Flat; 4. OPQ + IVF-PQ with the most bytes per vector that fit (:data:`PQ_BYTES`).

The default budget is :data:`DEFAULT_MEMORY_FRACTION` of physical RAM. Tuning (:func:`bisect_knob`) finds
the smallest knob whose recall@10 against exact search, on held-out queries, reaches ``target_recall``,
or, with a latency budget, the largest knob whose median single-query latency fits it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import faiss

from core.index.graph_kinds import ExactSpec, HNSWSpec, HNSWSQSpec
from core.index.ivf_kinds import IVFFlatSpec, IVFPQSpec, auto_nlist
from core.index.kind_base import IndexSpec, IndexSpecError

# Exact up to this many vectors. Measured by scripts/bench_hnsw_sweep.py
# (artifacts/results/hnsw_sweep_compact-minilm-12min_7857288ea60f.json, "crossover"): single-query CPU time
# of IndexFlatIP and IndexHNSWFlat (M=16, efSearch=100) are equal at ~2,000 vectors of d=512 (0.19 vs
# 0.20 ms) and ~3,200 at d=256; above, exact grows linearly while HNSW stays under 1 ms.
AUTO_EXACT_MAX = 2_000
# Graphs up to this many vectors: an HNSW build (M=16, efConstruction=200) runs at roughly 1-2k vectors/s
# per core here, so a million vectors is already many CPU-minutes; IVF trains and adds far faster.
HNSW_MAX = 1_000_000
DEFAULT_MEMORY_FRACTION = 0.5
PQ_BYTES = (64, 48, 32, 24, 16, 12, 8, 4)  # pq_m tried, most accurate first
TUNE_QUERIES = 500
TUNE_K = 10


def physical_memory() -> int:
    """Physical RAM in bytes."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def default_max_memory() -> int:
    """The default memory budget of an auto index: :data:`DEFAULT_MEMORY_FRACTION` of physical RAM."""
    return int(DEFAULT_MEMORY_FRACTION * physical_memory())


@dataclass(frozen=True)
class AutoSpec(IndexSpec):
    """Not a kind but a request: resolved to one by :func:`choose` (see the module docstring)."""

    kind: ClassVar[str] = "auto"
    title: ClassVar[str] = "auto (by vector count and memory budget, knob tuned to a target recall)"
    extra_fields: ClassVar[tuple[str, ...]] = ("max_memory", "target_recall", "latency_budget_ms")

    max_memory: int = 0  # bytes; 0: default_max_memory()
    target_recall: float = 0.95
    latency_budget_ms: float = 0.0  # > 0: tune to this median single-query latency instead

    def validate(self) -> None:
        if not 0 < self.target_recall <= 1:
            raise IndexSpecError(f"target recall must be in (0, 1], got {self.target_recall!r}")
        if self.max_memory < 0 or self.latency_budget_ms < 0:
            raise IndexSpecError("the memory and latency budgets must not be negative")

    def label(self) -> str:
        raise IndexSpecError("resolve an auto spec before asking for its label")

    def budget(self) -> int:
        return self.max_memory or default_max_memory()

    def resolve(self, count: int, dim: int | None = None) -> IndexSpec:
        return choose(count, dim, self.budget())[0]

    def tuning(self) -> dict[str, Any]:
        """What the tuning aims at (stored with the index, so a reuse can tell whether it still holds)."""
        return {"target_recall": self.target_recall, "latency_budget_ms": self.latency_budget_ms}

    def make(self, dim: int) -> faiss.Index:
        raise IndexSpecError("resolve an auto spec before building it")

    def bytes_per_vector(self, dim: int) -> float:
        raise IndexSpecError("resolve an auto spec before estimating its memory")

    def apply_knob(self, index: faiss.Index) -> None:
        raise IndexSpecError("resolve an auto spec before searching")

    def search_parameters(self, selector: faiss.IDSelector | None) -> faiss.SearchParameters:
        raise IndexSpecError("resolve an auto spec before searching")


def _candidates(count: int, dim: int) -> list[tuple[IndexSpec, str]]:
    out: list[tuple[IndexSpec, str]] = []
    if count <= AUTO_EXACT_MAX:
        out.append((ExactSpec(), f"{count} <= {AUTO_EXACT_MAX} vectors: exact search is as fast"))
    if count <= HNSW_MAX:
        out.append((HNSWSpec(), f"{count} <= {HNSW_MAX} vectors and the graph fits the budget"))
        out.append((HNSWSQSpec(), "an HNSW graph over float vectors does not fit; over 8-bit codes it does"))
    nlist = auto_nlist(count)
    out.append((IVFFlatSpec(nlist=nlist, nprobe=min(16, nlist)), "IVF-Flat fits the budget"))
    for pq_m in PQ_BYTES:
        if dim % pq_m == 0:
            spec = IVFPQSpec(nlist=nlist, nprobe=min(16, nlist), pq_m=pq_m)
            out.append((spec, f"only compressed codes fit: OPQ+IVF-PQ at {pq_m} bytes per vector"))
    return out


def choose(count: int, dim: int | None, max_memory: int) -> tuple[IndexSpec, str]:
    """The first kind (in the module docstring's order) that fits ``max_memory`` bytes, and why.

    Without ``dim`` only the vector count decides (exact, else HNSW, else IVF-Flat).
    """
    if dim is None:
        if count <= AUTO_EXACT_MAX:
            return ExactSpec(), f"{count} <= {AUTO_EXACT_MAX} vectors"
        if count <= HNSW_MAX:
            return HNSWSpec(), f"{count} <= {HNSW_MAX} vectors"
        return IVFFlatSpec().resolve(count), f"{count} > {HNSW_MAX} vectors"
    for spec, reason in _candidates(count, dim):
        if spec.memory_bytes(count, dim) <= max_memory:
            return spec, reason
    raise IndexSpecError(
        f"no index kind fits {count} vectors of dimension {dim} in {max_memory / 2**20:.1f} MiB",
        hint="raise --max-index-memory (the smallest, 4-byte IVF-PQ codes, need "
        f"{IVFPQSpec(nlist=auto_nlist(count), pq_m=4).memory_bytes(count, dim) / 2**20:.1f} MiB)",
    )


@dataclass(frozen=True)
class Trial:
    """One measured knob value: recall@10 against exact (0-1) and median single-query latency (ms)."""

    knob: int
    recall: float
    latency_ms: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def bisect_knob(
    low: int,
    high: int,
    measure: Callable[[int], Trial],
    target_recall: float,
    latency_budget_ms: float = 0.0,
) -> tuple[int, list[Trial]]:
    """The knob in ``[low, high]`` meeting the aim, by bisection (recall and latency grow with the knob).

    Without a latency budget: the smallest knob whose recall reaches ``target_recall`` (``high`` when none
    does). With one: the largest knob whose latency fits it (``low`` when none does). Returns the knob and
    every trial, in knob order.
    """
    trials: dict[int, Trial] = {}

    def ok(value: int) -> bool:
        if value not in trials:
            trials[value] = measure(value)
        t = trials[value]
        return t.latency_ms > latency_budget_ms if latency_budget_ms > 0 else t.recall >= target_recall

    lo, hi = low, high  # find the first value where ok() holds (latency: the first that is too slow)
    if not ok(hi):  # no knob reaches the recall, or even the largest fits the latency budget
        return hi, [trials[k] for k in sorted(trials)]
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    best = lo if latency_budget_ms <= 0 else max(low, lo - 1)
    if best not in trials:
        trials[best] = measure(best)
    return best, [trials[k] for k in sorted(trials)]
