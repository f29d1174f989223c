"""A built FAISS index over L2-normalised embeddings, of any registered kind (:mod:`core.index.registry`).

Scores are inner products (cosine similarity for normalised vectors); higher is better. Rows are
positional: search returns row numbers, and ``ids[row]`` names them. An index saved to a folder is
``index.faiss`` (the serialised FAISS index) plus ``index.json`` (model id, kind and parameters, vector
count, ordered ids, dimension, build time, the SHA-256 of ``index.faiss`` and of the source vectors, and
for ``auto`` the choice and the measured knob trade-off). Both files are written atomically and the JSON
last, so a folder holds either the old pair, or the new pair, or a pair whose checksum disagrees (refused
on load). A saved index opens memory-mapped where its kind allows (``IndexSpec.mmap``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from core.atomic import atomic_path, file_sha256, write_json
from core.errors import IndexMismatchError
from core.index.auto import AUTO_EXACT_MAX, TUNE_K, TUNE_QUERIES, AutoSpec, Trial, bisect_knob
from core.index.kind_base import IndexSpec, IndexSpecError
from core.index.registry import CHOICES, kind_class, make_spec
from core.index.sources import VectorSource, as_matrix, exact_top_k, sample_rows, source_of

FAISS_FILE = "index.faiss"
META_FILE = "index.json"
KINDS = CHOICES  # the kinds a user may ask for, auto first
LATENCY_QUERIES = 50  # single queries timed per knob value while tuning

# Searches of fewer queries than this run FAISS on one thread. FAISS parallelises a single query over the
# database once it is large (here from ~10k vectors); on this 2-vCPU machine, shared with other work, that
# made one exact query over 10k x 256 take 16 ms instead of 0.43 ms on one thread (40k: 11 ms vs 2.3 ms).
# Batches (evaluation) keep every thread: FAISS then uses BLAS, which scales.
SINGLE_THREAD_QUERIES = 20

__all__ = ["AUTO_EXACT_MAX", "KINDS", "IndexSpec", "IndexSpecError", "VectorIndex", "parse_kind"]


@contextlib.contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """Run FAISS with ``n`` OpenMP threads in this thread, then restore the previous count."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def parse_kind(name: str) -> str:
    """``name`` as a kind a user may ask for; :class:`IndexSpecError` for an unknown one."""
    return kind_class(name).kind


def vectors_digest(vectors: np.ndarray | VectorSource) -> str:
    """SHA-256 of the vectors as float32 rows (identifies the embeddings an index was built from)."""
    digest = hashlib.sha256()
    for _, batch in source_of(vectors).batches():
        digest.update(batch.tobytes())
    return digest.hexdigest()


def fill(
    index: faiss.Index, spec: IndexSpec, source: VectorSource, seed: int, ids: np.ndarray | None = None
) -> None:
    """Train ``index`` (a seeded sample of ``source``) when its kind needs it, then add every vector in
    batches (under ``ids`` when given, else row numbers)."""
    n_train = spec.train_count(source.count)
    if n_train and not index.is_trained:
        index.train(source.take(sample_rows(source.count, n_train, seed)))
    for start, batch in source.batches():
        if ids is None:
            index.add(batch)
        else:
            index.add_with_ids(batch, ids[start : start + len(batch)])


def neighbour_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true neighbours (rows of ``truth``) that ``found`` holds, over all queries."""
    if truth.size == 0:
        return 1.0
    return float((found[:, :, None] == truth[:, None, :]).any(axis=2).sum() / truth.size)


class VectorIndex:
    """A built or loaded FAISS index with its metadata; construct with :meth:`build` or :meth:`load`."""

    def __init__(self, index: faiss.Index, spec: IndexSpec, meta: dict[str, Any]) -> None:
        self.index = index
        self.spec = spec
        self.meta = meta

    @classmethod
    def build(
        cls,
        vectors: np.ndarray | VectorSource,
        spec: IndexSpec | str,
        ids: list[str],
        model_id: str,
        seed: int = 0,
        queries: np.ndarray | None = None,
    ) -> VectorIndex:
        """Index ``vectors`` (an array [n, d] or a :class:`~core.index.sources.ShardSource`); row i has id
        ``ids[i]``. ``auto`` chooses the kind, then tunes its knob on ``queries`` (default: a seeded
        sample of the vectors). Training samples are drawn with ``seed``."""
        source = source_of(vectors)
        count, dim = source.count, source.dim
        if len(ids) != count:
            raise ValueError(f"{len(ids)} ids for {count} vectors")
        requested = IndexSpec.parse(spec)
        concrete = requested.resolve(count, dim)
        start = time.perf_counter()
        index = concrete.make(dim)
        if count:
            fill(index, concrete, source, seed)
        meta = {
            "model_id": model_id,
            "kind": concrete.kind,
            "params": concrete.params(),
            "count": count,
            "dim": dim,
            "ids": list(ids),
            "build_seconds": round(time.perf_counter() - start, 6),
            "vectors_sha256": vectors_digest(source),
            "seed": seed,
            "faiss_version": faiss.__version__,
        }
        built = cls(index, concrete, meta)
        if isinstance(requested, AutoSpec):
            built.tune(requested, source, queries, seed)
        return built

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
        """Size of the serialised index in bytes (codes, graph, lists): its memory footprint."""
        saved = self.meta.get("faiss_bytes")
        return int(saved) if saved is not None else int(faiss.serialize_index(self.index).size)

    # -- search ---------------------------------------------------------------------------------------
    def set_knob(self, value: int) -> None:
        """Set the search-time knob (efSearch, nprobe; checked against its range); no-op for exact."""
        self.spec = self.spec.with_knob(value)
        self.spec.apply_knob(self.index)
        self.meta["params"] = self.spec.params()

    def set_ef_search(self, ef_search: int) -> None:
        """Change HNSW's efSearch (no effect on other kinds)."""
        if self.spec.knob_name == "ef_search":
            self.set_knob(ef_search)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per query: (scores [q, k] float32, indices [q, k] int64), best first.

        ``k`` is capped at the vector count. An approximate index may return fewer than ``k`` results for
        a query; the missing slots have index -1 and score ``-inf``.
        """
        matrix = as_matrix(queries, "queries")
        if matrix.shape[1] != self.dim:
            raise IndexMismatchError(
                f"query dimension {matrix.shape[1]} does not match the index dimension {self.dim}",
                hint="queries must be embedded with the model the index was built with",
            )
        k = min(int(k), self.count)
        if k <= 0:
            return np.zeros((len(matrix), 0), np.float32), np.zeros((len(matrix), 0), np.int64)
        if len(matrix) < SINGLE_THREAD_QUERIES:
            with faiss_threads(1):
                scores, indices = self.index.search(matrix, k)
        else:
            scores, indices = self.index.search(matrix, k)
        scores[indices < 0] = -np.inf
        return scores, indices

    # -- auto -----------------------------------------------------------------------------------------
    def measure(self, knob: int, queries: np.ndarray, truth: np.ndarray) -> Trial:
        """Recall@k against ``truth`` and median single-query latency (ms) with the knob at ``knob``."""
        self.set_knob(knob)
        found = self.search(queries, truth.shape[1])[1]
        times = []
        for q in queries[:LATENCY_QUERIES]:
            start = time.perf_counter()
            self.search(q, truth.shape[1])
            times.append(1000 * (time.perf_counter() - start))
        return Trial(knob, round(neighbour_recall(found, truth), 6), round(float(np.median(times)), 4))

    def tune(
        self, auto: AutoSpec, vectors: np.ndarray | VectorSource, queries: np.ndarray | None, seed: int = 0
    ) -> None:
        """Set the knob for ``auto``'s aim on held-out ``queries`` (default: a seeded sample of the
        vectors, truth by exact search over them); record the choice and trade-off in ``meta["auto"]``."""
        source = source_of(vectors)
        record: dict[str, Any] = {**auto.tuning(), "max_memory": auto.budget(), "chosen": self.kind}
        record["estimated_bytes"] = self.spec.memory_bytes(source.count, source.dim)
        knob = self.spec.knob()
        if knob is not None and self.count:
            held = (
                queries
                if queries is not None
                else source.take(sample_rows(source.count, TUNE_QUERIES, seed + 1))
            )
            held = as_matrix(held, "queries")
            truth = exact_top_k(source, held, min(TUNE_K, self.count))
            low, high = self.spec.knob_range()
            value, trials = bisect_knob(
                low, high, lambda v: self.measure(v, held, truth), auto.target_recall, auto.latency_budget_ms
            )
            self.set_knob(value)
            record.update(knob=knob.name, value=value, queries=len(held), k=truth.shape[1])
            record["tradeoff"] = [t.to_dict() for t in trials]
        self.meta["auto"] = record

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss`` then ``index.json`` into ``folder`` (each atomically); returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / FAISS_FILE) as tmp:
            faiss.write_index(self.index, str(tmp))
        self.meta["faiss_sha256"] = file_sha256(folder / FAISS_FILE)
        self.meta["faiss_bytes"] = (folder / FAISS_FILE).stat().st_size
        write_json(folder / META_FILE, self.meta)
        return folder

    @classmethod
    def load(
        cls,
        folder: str | Path,
        expected_model_id: str | None = None,
        expected_count: int | None = None,
        mmap: bool = True,
    ) -> VectorIndex:
        """Open a saved index (memory-mapped when ``mmap`` and its kind allows), refusing one built with
        another model or holding another vector count."""
        folder = Path(folder)
        meta = _read_meta(folder)
        _check_expected(folder, meta, expected_model_id, expected_count)
        faiss_path = folder / FAISS_FILE
        if file_sha256(faiss_path) != meta.get("faiss_sha256"):
            raise IndexMismatchError(
                f"{faiss_path} does not match its metadata (interrupted write or edited file)",
                hint="rebuild the index (`capsearch index`)",
            )
        spec = _spec_of(folder, meta)
        flags = faiss.IO_FLAG_MMAP if mmap and spec.mmap else 0
        index = faiss.read_index(str(faiss_path), flags)
        if index.ntotal != meta.get("count") or len(meta.get("ids", ())) != index.ntotal:
            raise IndexMismatchError(
                f"index in {folder} holds {index.ntotal} vectors but its metadata lists {meta.get('count')}",
                hint="rebuild the index (`capsearch index`)",
            )
        spec.apply_knob(index)
        return cls(index, spec, meta)


def _read_meta(folder: Path) -> dict[str, Any]:
    meta_path, faiss_path = folder / META_FILE, folder / FAISS_FILE
    if not meta_path.is_file() or not faiss_path.is_file():
        raise IndexMismatchError(
            f"no saved index in {folder}", hint="build one with `capsearch index --dataset D --model M`"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise IndexMismatchError(f"{meta_path} is not valid JSON ({exc})", hint="rebuild the index") from exc
    if not (
        isinstance(meta, dict)
        and isinstance(meta.get("params") or {}, dict)
        and isinstance(meta.get("ids"), list)
        and all(isinstance(i, str) for i in meta["ids"])
    ):
        raise IndexMismatchError(f"{meta_path} is not an index description", hint="rebuild the index")
    return meta


def _check_expected(folder: Path, meta: dict[str, Any], model_id: str | None, count: int | None) -> None:
    if model_id is not None and meta.get("model_id") != model_id:
        raise IndexMismatchError(
            f"index in {folder} was built with model {meta.get('model_id')!r}, not {model_id!r}",
            hint="rebuild it for this model (`capsearch index`), or open it with the model it was built with",
        )
    if count is not None and meta.get("count") != count:
        raise IndexMismatchError(
            f"index in {folder} holds {meta.get('count')} vectors but the embeddings have {count}",
            hint="the embeddings changed since the index was built; rebuild it (`capsearch index`)",
        )


def _spec_of(folder: Path, meta: dict[str, Any]) -> IndexSpec:
    """The spec recorded in ``meta`` (indexes saved before the registry have the same kind names)."""
    try:
        spec = make_spec(str(meta.get("kind")), **(meta.get("params") or {}))
    except (TypeError, IndexSpecError) as exc:
        raise IndexMismatchError(
            f"index in {folder} has an unknown kind or unreadable parameters ({exc})",
            hint="rebuild the index (`capsearch index`)",
        ) from exc
    if isinstance(spec, AutoSpec):
        raise IndexMismatchError(f"index in {folder} records kind 'auto' instead of the kind chosen")
    return spec
