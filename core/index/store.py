"""The index cache: one folder per (model, dataset, split, side, index kind and build parameters).

Layout: ``indexes_dir()/<model-id>/<dataset>/<split>/<images|captions>-<label>/`` (``<split>.bf16`` in bf16,
as :func:`core.paths.split_folder` names it) where the label is
``exact`` or ``hnsw-m<M>-efc<efConstruction>`` (efSearch is set at load time, so it does not key the cache).
A cached index is reused only when its model id, vector count and source-vector checksum all match the
current embeddings; otherwise it is rebuilt and replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from core.errors import IndexMismatchError
from core.index.vector_index import IndexSpec, VectorIndex, vectors_digest
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
) -> tuple[VectorIndex, bool]:
    """The index of ``vectors`` from the cache when valid, else built and saved; returns (index, reused)."""
    reporter = ensure(reporter)
    spec = IndexSpec.parse(spec).resolve(len(vectors))
    folder = key.folder(spec)
    with exclusive(folder, reporter.log):
        return _load_or_build(vectors, ids, key, spec, folder, reporter)


def _load_or_build(
    vectors: np.ndarray, ids: list[str], key: IndexKey, spec: IndexSpec, folder: Path, reporter: Reporter
) -> tuple[VectorIndex, bool]:
    """The cached index in ``folder`` when it is valid for ``vectors``, else a new one (lock held)."""
    side = key.side
    if (folder / "index.json").is_file():
        try:
            index = VectorIndex.load(folder, expected_model_id=key.model_id, expected_count=len(vectors))
            if index.meta.get("vectors_sha256") == vectors_digest(vectors) and index.ids == list(ids):
                index.set_ef_search(spec.ef_search)
                reporter.log(f"reusing {side} index {spec.label()} ({index.count} vectors) from {folder}")
                return index, True
            reporter.log(f"{side} index in {folder} is stale (embeddings changed); rebuilding")
        except IndexMismatchError as err:
            reporter.log(f"{side} index in {folder} is unusable ({err.message}); rebuilding")
    reporter.check_cancelled()
    reporter.update(f"index {side} ({spec.label()})", 0, 1)
    index = VectorIndex.build(vectors, spec, ids, key.model_id)
    index.save(folder)
    reporter.update(f"index {side} ({spec.label()})", 1, 1, seconds=index.build_seconds)
    return index, False
