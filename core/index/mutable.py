"""FAISS indexes updated in place: vectors added and removed by a caller's int64 id, never rebuilt for it.

Any registered kind (:mod:`core.index.registry`); how it takes updates is the kind's ``updates``:

- ``remove`` (exact, IVF-Flat, IVF-PQ): removals are ``remove_ids``, so the index always equals one built
  from scratch on the live vectors (for IVF: with the same trained centroids). Exact is wrapped in a
  ``faiss.IndexIDMap2``; IVF kinds keep ids themselves, with a hash-table direct map for lookups by id.
  An IVF index trains on its first additions;
- ``tombstones`` (HNSW, HNSW-SQ, in an ``IndexIDMap2``): a graph cannot delete, so a removed id becomes a
  tombstone, filtered out at query time by an ``IDSelector``; once tombstones pass
  :data:`REBUILD_TOMBSTONES` of the stored vectors the graph is rebuilt from the live ones.

Searches return the best ``k`` live ids, ties broken by id, optionally only among ``allowed`` ids (a
filter); a saved index is ``index.faiss`` plus ``index.json`` (kind, parameters, tombstones, the faiss
file's sha256 and whatever the caller adds, e.g. the catalogue generation it reflects), written atomically,
JSON last.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from core.atomic import write_bytes, write_json
from core.errors import IndexMismatchError
from core.index.kind_base import IndexSpec, IndexSpecError, inner
from core.index.registry import make_spec
from core.index.sources import as_matrix as _as_matrix
from core.index.vector_index import FAISS_FILE, META_FILE, SINGLE_THREAD_QUERIES
from core.index.vector_index import faiss_threads as _faiss_threads

# Rebuild an HNSW graph once tombstones pass this fraction of its stored vectors. Measured by
# scripts/bench_library.py (artifacts/results/bench_library.json, "hnsw_tombstones"; 19,200 vectors, d=64,
# shared 2-vCPU machine at load ~16): recall@10 against exact stays >= 0.997 up to 50% tombstones, but the
# query p50 grows with them (0.13 ms with none, 0.47 ms at 10%, 0.83 ms at 20%, 1.6 ms at 50%: the walk
# visits dead nodes and checks the selector) while a rebuild costs 7.9 s; at 20% queries are still under
# 1 ms, and the rebuild is paid once per fifth of the library replaced.
REBUILD_TOMBSTONES = 0.2
# Below this share of live vectors allowed by a filter, an HNSW search scans the allowed vectors exactly:
# a graph walk that must skip most nodes loses recall.
HNSW_SCAN_BELOW = 0.2
TIE_SLACK = 16


def _ids(values: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values, dtype=np.int64).reshape(-1))


def _empty_faiss(dim: int, spec: IndexSpec) -> faiss.Index:
    if not spec.native_ids:
        return faiss.IndexIDMap2(spec.make(dim))
    index = spec.make(dim)
    api: Any = faiss  # the stubs lack DirectMap
    faiss.extract_index_ivf(index).set_direct_map_type(api.DirectMap.Hashtable)
    return index


class MutableIndex:
    """An id-keyed index of any registered kind with add/remove; see the module docstring."""

    def __init__(self, index: faiss.Index, spec: IndexSpec, tombstones: set[int] | None = None) -> None:
        if spec.kind == "auto":
            raise IndexSpecError("resolve the index spec first, got 'auto'")
        self.index = index
        self.spec = spec
        self.tombstones: set[int] = set(tombstones or ())

    @classmethod
    def empty(cls, dim: int, spec: IndexSpec) -> MutableIndex:
        return cls(_empty_faiss(dim, spec), spec)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, spec: IndexSpec) -> MutableIndex:
        matrix = _as_matrix(vectors, "vectors")
        index = cls.empty(matrix.shape[1], spec)
        index.add(ids, matrix)
        return index

    # -- contents ---------------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def stored(self) -> int:
        """Vectors held, tombstoned ones included."""
        return int(self.index.ntotal)

    @property
    def count(self) -> int:
        """Live vectors."""
        return self.stored - len(self.tombstones)

    def stored_ids(self) -> np.ndarray:
        if self.spec.native_ids:  # IVF: the ids of every inverted list
            ivf: Any = faiss.extract_index_ivf(self.index)
            lists = ivf.invlists
            parts = [
                faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                for i in range(ivf.nlist)
                if lists.list_size(i)
            ]
            return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
        index: Any = self.index
        return faiss.vector_to_array(index.id_map).astype(np.int64)

    def live_ids(self) -> np.ndarray:
        ids = self.stored_ids()
        if self.tombstones:
            ids = ids[~np.isin(ids, _ids(sorted(self.tombstones)))]
        return ids

    def holds(self, id_: int) -> bool:
        """Whether ``id_`` is a live vector: a lookup in the id map, not a scan of every id."""
        if id_ in self.tombstones:
            return False
        try:
            self.index.reconstruct(id_)
        except RuntimeError:  # IndexIDMap2 raises for an id it does not hold
            return False
        return True

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (which must be live)."""
        out = np.zeros((len(ids), self.dim), np.float32)
        for j, i in enumerate(_ids(ids).tolist()):
            out[j] = self.index.reconstruct(i)
        return out

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(live ids, their vectors), read from the storage in one pass."""
        ids = self.stored_ids()
        if self.spec.native_ids:
            return ids, self.vectors_of(ids)
        stored: Any = inner(self.index)
        storage = (
            faiss.downcast_index(stored.storage) if hasattr(stored, "storage") else stored
        )  # graph kinds
        vectors = (
            storage.reconstruct_n(0, self.stored) if self.stored else np.zeros((0, self.dim), np.float32)
        )
        keep = ~np.isin(ids, _ids(sorted(self.tombstones))) if self.tombstones else np.ones(len(ids), bool)
        return ids[keep], np.ascontiguousarray(vectors[keep], dtype=np.float32)

    # -- updates ----------------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Append ``vectors`` under ``ids`` (ids must not be present; a tombstoned id may come back)."""
        ids, matrix = _ids(ids), _as_matrix(vectors, "vectors")
        if len(ids) != len(matrix):
            raise ValueError(f"{len(ids)} ids for {len(matrix)} vectors")
        if not len(ids):
            return
        back = self.tombstones.intersection(ids.tolist())
        if back:  # an HNSW id coming back: compact first, so that each stored id is unique
            self.remove_tombstoned()
        if not self.index.is_trained:  # an IVF index trains on its first additions
            self.index.train(matrix)
        self.index.add_with_ids(matrix, ids)

    def remove(self, ids: np.ndarray) -> None:
        """Remove ``ids`` (unknown ids are ignored): at once for exact and IVF, as tombstones for HNSW."""
        ids = _ids(ids)
        if not len(ids):
            return
        if self.spec.updates == "remove":
            if self.spec.native_ids:  # an IVF hash-table direct map removes only through an id array
                self.index.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)))
            else:
                self.index.remove_ids(faiss.IDSelectorBatch(ids))
            return
        present = set(self.stored_ids().tolist())
        self.tombstones.update(i for i in ids.tolist() if i in present)
        if self.stored and len(self.tombstones) > REBUILD_TOMBSTONES * self.stored:
            self.remove_tombstoned()

    def remove_tombstoned(self) -> None:
        """Rebuild the HNSW graph from the live vectors (no tombstones left)."""
        if not self.tombstones:
            return
        ids, vectors = self.all_vectors()
        fresh = _empty_faiss(self.dim, self.spec)
        if len(ids):
            if not fresh.is_trained:  # HNSW-SQ: the quantiser trains on the live vectors
                fresh.train(vectors)
            fresh.add_with_ids(vectors, ids)
        self.index, self.tombstones = fresh, set()

    def set_knob(self, value: int) -> None:
        """Set the search-time knob (efSearch, nprobe); no-op for exact."""
        self.spec = self.spec.with_knob(value)
        self.spec.apply_knob(self.index)

    def set_ef_search(self, ef_search: int) -> None:
        if self.spec.knob_name == "ef_search":
            self.set_knob(ef_search)

    # -- search -----------------------------------------------------------------------------------------
    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` live ids for one query (among ``allowed`` when given): (scores, ids), best first,
        ties by id. Fewer come back only when fewer exist (or, for HNSW, the graph walk finds fewer)."""
        vector = _as_matrix(query, "query")
        if vector.shape != (1, self.dim):
            raise IndexMismatchError(
                f"query dimension {vector.shape[1]} does not match the index dimension {self.dim}",
                hint="queries must be embedded with the model the index was built with",
            )
        if allowed is not None:
            allowed = _ids(allowed)
            if self.tombstones:
                allowed = allowed[~np.isin(allowed, _ids(sorted(self.tombstones)))]
        pool = self.count if allowed is None else len(allowed)
        if k <= 0 or pool <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        if (
            allowed is not None
            and self.spec.updates == "tombstones"
            and len(allowed) < HNSW_SCAN_BELOW * self.count
        ):
            return self._scan(vector[0], allowed, k)
        fetch = min(k + TIE_SLACK, pool)
        params = self._params(allowed)
        if len(vector) < SINGLE_THREAD_QUERIES:
            with _faiss_threads(1):
                scores, ids = self.index.search(vector, fetch, params=params)
        else:
            scores, ids = self.index.search(vector, fetch, params=params)
        keep = ids[0] >= 0
        return _best(scores[0][keep], ids[0][keep], k)

    def _params(self, allowed: np.ndarray | None) -> faiss.SearchParameters | None:
        selector: faiss.IDSelector | None = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(_ids(allowed))
        elif self.tombstones:
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(_ids(sorted(self.tombstones))))
        if selector is None:
            return None
        params: Any = self.spec.search_parameters(selector)
        params.sel_ref = selector  # keep the selector alive as long as the parameters
        return params

    def _scan(self, query: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        vectors = self.vectors_of(allowed)
        return _best(vectors @ query, allowed, k)

    # -- persistence ------------------------------------------------------------------------------------
    def save(self, folder: Path, extra: dict[str, Any] | None = None) -> None:
        """``index.faiss`` then ``index.json`` (atomically each); ``extra`` goes into the JSON."""
        blob = faiss.serialize_index(self.index).tobytes()
        write_bytes(folder / FAISS_FILE, blob)
        meta = {
            **(extra or {}),
            "kind": self.kind,
            "params": self.spec.params(),
            "dim": self.dim,
            "stored": self.stored,
            "tombstones": sorted(self.tombstones),
            "faiss_sha256": hashlib.sha256(blob).hexdigest(),
            "faiss_version": faiss.__version__,
        }
        write_json(folder / META_FILE, meta)

    @classmethod
    def load(cls, folder: Path) -> tuple[MutableIndex, dict[str, Any]]:
        """A saved index and its JSON; :class:`IndexMismatchError` when missing, damaged or inconsistent."""
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
            blob = (folder / FAISS_FILE).read_bytes()
        except (OSError, ValueError) as exc:
            raise IndexMismatchError(f"no readable index in {folder} ({exc})") from exc
        if not isinstance(meta, dict) or hashlib.sha256(blob).hexdigest() != meta.get("faiss_sha256"):
            raise IndexMismatchError(f"{folder / FAISS_FILE} does not match its metadata")
        try:
            spec = make_spec(meta["kind"], **(meta.get("params") or {}))
            tombstones = {int(i) for i in meta.get("tombstones", [])}
        except (KeyError, TypeError, ValueError, IndexSpecError) as exc:
            raise IndexMismatchError(f"{folder / META_FILE} is not a mutable index description") from exc
        index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        id_mapped = spec.native_ids or isinstance(index, faiss.IndexIDMap2)
        if not id_mapped or index.ntotal != meta.get("stored"):
            raise IndexMismatchError(
                f"{folder} does not hold an id-mapped index of {meta.get('stored')} vectors"
            )
        mutable = cls(index, spec, tombstones)
        spec.apply_knob(index)
        return mutable, meta


def _best(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (score desc, id asc)."""
    order = np.lexsort((ids, -scores))[:k]
    return scores[order].astype(np.float32), ids[order].astype(np.int64)
