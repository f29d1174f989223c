"""FAISS vector indexes over L2-normalised embeddings: exact (``IndexFlatIP``) and HNSW (``IndexHNSWFlat``).

Scores are inner products (cosine similarity for normalised vectors); higher is better. An index saved to a
folder is ``index.faiss`` (the serialised FAISS index) plus ``index.json`` (model id, kind and parameters,
vector count, ordered ids, dimension, build time, and the SHA-256 of ``index.faiss`` and of the source
vectors). Both files are written atomically and the JSON last, so a folder holds either the old pair, or
the new pair, or a pair whose checksum disagrees (refused on load).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import faiss
import numpy as np

from core.atomic import write_bytes, write_json
from core.errors import CapsearchError, IndexMismatchError

Kind = Literal["exact", "hnsw", "auto"]
KINDS: tuple[str, ...] = ("exact", "hnsw", "auto")
FAISS_FILE = "index.faiss"
META_FILE = "index.json"

# `auto` uses an exact index up to this many vectors and HNSW above it. Measured on this machine (2 shared
# vCPUs, AMD EPYC, faiss-cpu 1.15.1) by scripts/bench_hnsw_sweep.py
# (artifacts/results/hnsw_sweep_compact-minilm-12min_7857288ea60f.json, "crossover"): single-query search
# CPU time, p50, of IndexFlatIP vs IndexHNSWFlat (M=16, efConstruction=200, efSearch=100) on clustered unit
# vectors. Exact is as fast as HNSW up to ~2,000 vectors at d=512 (0.19 vs 0.20 ms) and ~3,200 at d=256;
# above, exact grows linearly (d=512: 0.55 ms at 5k, 1.9 ms at 20k, 36 ms at 200k) while HNSW stays
# under 1 ms. We take the smaller crossover, rounded down, so auto never picks the slower index.
AUTO_EXACT_MAX = 2_000


# Searches of fewer queries than this run FAISS on one thread. FAISS parallelises a single query over the
# database once it is large (here from ~10k vectors); on this 2-vCPU machine, shared with other work, that
# made one exact query over 10k x 256 take 16 ms instead of 0.43 ms on one thread (40k: 11 ms vs 2.3 ms).
# Batches (evaluation) keep every thread: FAISS then uses BLAS, which scales.
SINGLE_THREAD_QUERIES = 20


@contextlib.contextmanager
def _faiss_threads(n: int) -> Iterator[None]:
    """Run FAISS with ``n`` OpenMP threads in this thread, then restore the previous count."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class IndexSpecError(CapsearchError):
    """An index specification is malformed (unknown kind, parameters out of range)."""


def parse_kind(name: str) -> Kind:
    """``name`` as an index kind; :class:`IndexSpecError` for an unknown one."""
    if name not in KINDS:
        raise IndexSpecError(f"unknown index kind {name!r}", hint=f"use one of: {', '.join(KINDS)}")
    return cast(Kind, name)


@dataclass(frozen=True)
class IndexSpec:
    """What index to build: ``kind`` plus the HNSW parameters (ignored by an exact index)."""

    kind: Kind = "auto"
    m: int = 16
    ef_construction: int = 200
    ef_search: int = 100

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise IndexSpecError(f"unknown index kind {self.kind!r}", hint=f"use one of: {', '.join(KINDS)}")
        for name, low in (("m", 2), ("ef_construction", 1), ("ef_search", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise IndexSpecError(f"HNSW {name} must be an integer >= {low}, got {value!r}")

    @classmethod
    def parse(cls, spec: IndexSpec | str) -> IndexSpec:
        """An :class:`IndexSpec` as is, or a kind name with default parameters."""
        return spec if isinstance(spec, IndexSpec) else cls(kind=parse_kind(spec))

    def resolve(self, count: int) -> IndexSpec:
        """The concrete spec for ``count`` vectors: ``auto`` becomes exact or HNSW by :data:`AUTO_EXACT_MAX`.

        An exact spec comes back with default (unused) HNSW fields, so equal indexes have equal specs.
        """
        kind = self.kind if self.kind != "auto" else ("exact" if count <= AUTO_EXACT_MAX else "hnsw")
        return IndexSpec("exact") if kind == "exact" else replace(self, kind=kind)

    def params(self) -> dict[str, int]:
        """The parameters that matter for this kind (none for exact)."""
        if self.kind == "exact":
            return {}
        return {"m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search}

    def label(self) -> str:
        """A short name, also used as a cache folder name: ``exact`` or ``hnsw-m16-efc200``.

        ``ef_search`` is a search-time setting, so indexes differing only in it share a folder.
        """
        return "exact" if self.kind == "exact" else f"{self.kind}-m{self.m}-efc{self.ef_construction}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def vectors_digest(vectors: np.ndarray) -> str:
    """SHA-256 of a float32 C-contiguous copy of ``vectors`` (identifies the embeddings an index was built from)."""
    return hashlib.sha256(np.ascontiguousarray(vectors, dtype=np.float32).tobytes()).hexdigest()


def _as_matrix(vectors: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array [n, d], got shape {array.shape}")
    return np.ascontiguousarray(array)


class VectorIndex:
    """A built or loaded FAISS index with its metadata; construct with :meth:`build` or :meth:`load`."""

    def __init__(self, index: faiss.Index, spec: IndexSpec, meta: dict[str, Any]) -> None:
        self.index = index
        self.spec = spec
        self.meta = meta

    @classmethod
    def build(cls, vectors: np.ndarray, spec: IndexSpec | str, ids: list[str], model_id: str) -> VectorIndex:
        """Index ``vectors`` [n, d] (row i has id ``ids[i]``); ``auto`` resolves by the row count."""
        matrix = _as_matrix(vectors, "vectors")
        count, dim = matrix.shape
        if len(ids) != count:
            raise ValueError(f"{len(ids)} ids for {count} vectors")
        spec = IndexSpec.parse(spec).resolve(count)
        start = time.perf_counter()
        if spec.kind == "exact":
            index: faiss.Index = faiss.IndexFlatIP(dim)
        else:
            index = faiss.IndexHNSWFlat(dim, spec.m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = spec.ef_construction
            index.hnsw.efSearch = spec.ef_search
        if count:
            index.add(matrix)
        meta = {
            "model_id": model_id,
            "kind": spec.kind,
            "params": spec.params(),
            "count": count,
            "dim": dim,
            "ids": list(ids),
            "build_seconds": round(time.perf_counter() - start, 6),
            "vectors_sha256": vectors_digest(matrix),
            "faiss_version": faiss.__version__,
        }
        return cls(index, spec, meta)

    # -- properties -----------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def model_id(self) -> str:
        return str(self.meta["model_id"])

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ids(self) -> list[str]:
        return self.meta["ids"]

    @property
    def build_seconds(self) -> float:
        return float(self.meta["build_seconds"])

    @property
    def nbytes(self) -> int:
        """Size of the serialised index in bytes (vectors plus graph): its memory footprint."""
        saved = self.meta.get("faiss_bytes")
        return int(saved) if saved is not None else int(faiss.serialize_index(self.index).size)

    # -- search ---------------------------------------------------------------------------------------
    def set_ef_search(self, ef_search: int) -> None:
        """Change HNSW's efSearch (no effect on an exact index)."""
        if self.spec.kind == "hnsw" and isinstance(self.index, faiss.IndexHNSW):
            self.spec = replace(self.spec, ef_search=ef_search)
            self.index.hnsw.efSearch = ef_search
            self.meta["params"] = self.spec.params()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per query: (scores [q, k] float32, indices [q, k] int64), best first.

        ``k`` is capped at the vector count. HNSW may return fewer than ``k`` results for a query; the
        missing slots have index -1 and score ``-inf``.
        """
        matrix = _as_matrix(queries, "queries")
        if matrix.shape[1] != self.dim:
            raise IndexMismatchError(
                f"query dimension {matrix.shape[1]} does not match the index dimension {self.dim}",
                hint="queries must be embedded with the model the index was built with",
            )
        k = min(int(k), self.count)
        if k <= 0:
            return np.zeros((len(matrix), 0), np.float32), np.zeros((len(matrix), 0), np.int64)
        if len(matrix) < SINGLE_THREAD_QUERIES:
            with _faiss_threads(1):
                scores, indices = self.index.search(matrix, k)
        else:
            scores, indices = self.index.search(matrix, k)
        scores[indices < 0] = -np.inf
        return scores, indices

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss`` then ``index.json`` into ``folder`` (each atomically); returns the folder."""
        folder = Path(folder)
        blob = faiss.serialize_index(self.index).tobytes()
        write_bytes(folder / FAISS_FILE, blob)
        self.meta["faiss_sha256"] = hashlib.sha256(blob).hexdigest()
        self.meta["faiss_bytes"] = len(blob)
        write_json(folder / META_FILE, self.meta)
        return folder

    @classmethod
    def load(
        cls, folder: str | Path, expected_model_id: str | None = None, expected_count: int | None = None
    ) -> VectorIndex:
        """Open a saved index, refusing one built with another model or holding another vector count."""
        folder = Path(folder)
        meta_path, faiss_path = folder / META_FILE, folder / FAISS_FILE
        if not meta_path.is_file() or not faiss_path.is_file():
            raise IndexMismatchError(
                f"no saved index in {folder}", hint="build one with `capsearch index --dataset D --model M`"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise IndexMismatchError(
                f"{meta_path} is not valid JSON ({exc})", hint="rebuild the index"
            ) from exc
        if not (
            isinstance(meta, dict)
            and isinstance(meta.get("params") or {}, dict)
            and isinstance(meta.get("ids"), list)
            and all(isinstance(i, str) for i in meta["ids"])
        ):
            raise IndexMismatchError(f"{meta_path} is not an index description", hint="rebuild the index")
        if expected_model_id is not None and meta.get("model_id") != expected_model_id:
            raise IndexMismatchError(
                f"index in {folder} was built with model {meta.get('model_id')!r}, not {expected_model_id!r}",
                hint="rebuild it for this model (`capsearch index`), or open it with the model it was built with",
            )
        if expected_count is not None and meta.get("count") != expected_count:
            raise IndexMismatchError(
                f"index in {folder} holds {meta.get('count')} vectors but the embeddings have {expected_count}",
                hint="the embeddings changed since the index was built; rebuild it (`capsearch index`)",
            )
        blob = faiss_path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != meta.get("faiss_sha256"):
            raise IndexMismatchError(
                f"{faiss_path} does not match its metadata (interrupted write or edited file)",
                hint="rebuild the index (`capsearch index`)",
            )
        index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        if index.ntotal != meta.get("count") or len(meta.get("ids", ())) != index.ntotal:
            raise IndexMismatchError(
                f"index in {folder} holds {index.ntotal} vectors but its metadata lists {meta.get('count')}",
                hint="rebuild the index (`capsearch index`)",
            )
        params = meta.get("params") or {}
        try:
            spec = IndexSpec(kind=parse_kind(str(meta.get("kind"))), **params)
        except (TypeError, IndexSpecError) as exc:
            raise IndexMismatchError(f"index in {folder} has unreadable parameters ({exc})") from exc
        if isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = spec.ef_search
        return cls(index, spec, meta)
