"""The index cache: one folder per (model, dataset, split, side, index kind and build parameters).

Layout: ``indexes_dir()/<model-id>/<dataset>/<split>/<images|captions>-<label>/`` (``<split>.bf16`` in bf16,
as :func:`core.paths.split_folder` names it) where the label is the kind and its build parameters, e.g.
``exact``, ``hnsw-m<M>-efc<efConstruction>``, ``ivf-pq-nlist<n>-pq_m<m>-nbits8-opq1`` (the search-time knob
is set at load time, so it does not key the cache; ``auto`` uses the folder of the kind it chose).
A cached index is reused only when its model id, vector count and source-vector checksum all match the
current embeddings; otherwise it is rebuilt and replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from core.errors import IndexMismatchError
from core.index.auto import AutoSpec
from core.index.kind_base import IndexSpec
from core.index.vector_index import VectorIndex, vectors_digest
from core.locks import exclusive
from core.paths import indexes_dir, safe_name, split_folder
from core.progress import Reporter, ensure

Side = Literal["images", "captions"]


@dataclass(frozen=True)
class IndexKey:
    """Whose index it is: the model, dataset, split, side and inference precision its vectors came from."""

    model_id: str
    dataset: str
    split: str
    side: Side
    precision: str = "fp32"

    def folder(self, spec: IndexSpec) -> Path:
        """The cache folder of a resolved (non-``auto``) spec."""
        if spec.kind == "auto":
            raise ValueError("resolve an auto spec before asking for its folder")
        leaf = split_folder(self.split, self.precision)
        model, dataset = safe_name(self.model_id), safe_name(self.dataset)
        return indexes_dir() / model / dataset / leaf / f"{self.side}-{spec.label()}"


def cached_index(
    vectors: np.ndarray,
    ids: list[str],
    key: IndexKey,
    spec: IndexSpec | str = "auto",
    reporter: Reporter | None = None,
    queries: np.ndarray | None = None,
) -> tuple[VectorIndex, bool]:
    """The index of ``vectors`` from the cache when valid, else built and saved; returns (index, reused).

    ``auto`` tunes the knob on ``queries`` (default: a sample of the vectors) and keeps that tuning with
    the index, so a reuse for the same aim tunes nothing.
    """
    reporter = ensure(reporter)
    requested = IndexSpec.parse(spec)
    dim = int(vectors.shape[1]) if vectors.ndim == 2 else None
    concrete = requested.resolve(len(vectors), dim)
    folder = key.folder(concrete)
    with exclusive(folder, reporter.log):
        return _load_or_build(vectors, ids, key, (requested, concrete), folder, reporter, queries)


def _reuse(index: VectorIndex, requested: IndexSpec, vectors: np.ndarray, queries: np.ndarray | None) -> None:
    """Set the knob of a reused index: the request's, or for auto the stored tuning (tuned again, and its
    JSON rewritten by the caller, when the aim changed)."""
    if not isinstance(requested, AutoSpec):
        if requested.knob_value is not None:
            index.set_knob(requested.knob_value)
        return
    stored = index.meta.get("auto") or {}
    if all(stored.get(k) == v for k, v in requested.tuning().items()) and "value" in stored:
        index.set_knob(int(stored["value"]))
    elif index.spec.knob() is not None:
        index.tune(requested, vectors, queries)


def _load_or_build(
    vectors: np.ndarray,
    ids: list[str],
    key: IndexKey,
    specs: tuple[IndexSpec, IndexSpec],
    folder: Path,
    reporter: Reporter,
    queries: np.ndarray | None,
) -> tuple[VectorIndex, bool]:
    """The cached index in ``folder`` when it is valid for ``vectors``, else a new one (lock held)."""
    side, (requested, spec) = key.side, specs
    if (folder / "index.json").is_file():
        try:
            index = VectorIndex.load(folder, expected_model_id=key.model_id, expected_count=len(vectors))
            if index.meta.get("vectors_sha256") == vectors_digest(vectors) and index.ids == list(ids):
                before = index.meta.get("auto")
                _reuse(index, requested, vectors, queries)
                if index.meta.get("auto") != before:
                    index.save(folder)
                reporter.log(f"reusing {side} index {spec.label()} ({index.count} vectors) from {folder}")
                return index, True
            reporter.log(f"{side} index in {folder} is stale (embeddings changed); rebuilding")
        except IndexMismatchError as err:
            reporter.log(f"{side} index in {folder} is unusable ({err.message}); rebuilding")
    reporter.check_cancelled()
    reporter.update(f"index {side} ({spec.label()})", 0, 1)
    index = VectorIndex.build(vectors, requested, ids, key.model_id, queries=queries)
    index.save(folder)
    reporter.update(f"index {side} ({spec.label()})", 1, 1, seconds=index.build_seconds)
    return index, False
