"""Where an index's vectors come from: an array in memory, or shards on disk read one at a time.

A :class:`ShardSource` reads ``.npy`` shards memory-mapped (only the rows asked for are paged in) and the
embedding cache's chunk files (``chunk-NNNNN.npz``, :mod:`core.embed.cache`: the ``images`` array, or
``captions`` with ``member="captions"``) one chunk at a time, so an index is built from more vectors than
fit in RAM. Every source counts the rows it has handed out (``rows_read``), which tests bound.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from core.errors import IndexMismatchError

BATCH = 65_536  # rows per batch handed to FAISS while adding


def as_matrix(vectors: np.ndarray, what: str) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 [n, d] array (a single vector becomes [1, d])."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array [n, d], got shape {array.shape}")
    return np.ascontiguousarray(array)


class VectorSource(Protocol):
    """Rows of float32 vectors, read in batches or by row number."""

    count: int
    dim: int
    rows_read: int

    def batches(self, size: int = BATCH) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) in order, each at most ``size`` rows."""
        ...

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of ``rows`` (sorted ascending), as one array."""
        ...


class ArraySource:
    """A source over an array already in memory (or memory-mapped)."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors if vectors.ndim == 2 else as_matrix(vectors, "vectors")
        self.count, self.dim = int(self.vectors.shape[0]), int(self.vectors.shape[1])
        self.rows_read = 0

    def batches(self, size: int = BATCH) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.count, size):
            batch = as_matrix(self.vectors[start : start + size], "vectors")
            self.rows_read += len(batch)
            yield start, batch

    def take(self, rows: np.ndarray) -> np.ndarray:
        self.rows_read += len(rows)
        return as_matrix(self.vectors[np.asarray(rows, dtype=np.int64)], "vectors")


def _shard_shape(path: Path, member: str) -> tuple[int, int]:
    if path.suffix == ".npy":
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    else:
        with zipfile.ZipFile(path) as z, z.open(f"{member}.npy") as fh:
            fmt = np.lib.format
            version = fmt.read_magic(fh)  # the header only, not the data
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape = read(fh)[0]
    if len(shape) != 2:
        raise IndexMismatchError(f"{path} holds an array of shape {shape}, not [n, d] vectors")
    return int(shape[0]), int(shape[1])


class ShardSource:
    """Vectors split over ``.npy`` files or embedding-cache chunks (``.npz``), in the order given."""

    def __init__(self, paths: Sequence[str | Path], member: str = "images") -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise IndexMismatchError("no vector shards given")
        self.member = member
        shapes = []
        for p in self.paths:
            try:
                shapes.append(_shard_shape(p, member))
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                raise IndexMismatchError(f"{p} is not a readable vector shard ({exc})") from exc
        dims = {d for _, d in shapes}
        if len(dims) != 1:
            raise IndexMismatchError(f"vector shards disagree on the dimension: {sorted(dims)}")
        self.dim = dims.pop()
        self.starts = np.cumsum([0] + [n for n, _ in shapes])
        self.count = int(self.starts[-1])
        self.rows_read = 0

    @classmethod
    def of_folder(cls, folder: str | Path, member: str = "images") -> ShardSource:
        """The ``*.npy`` shards of ``folder`` (else its ``chunk-*.npz`` files), in name order."""
        folder = Path(folder)
        paths = sorted(folder.glob("*.npy")) or sorted(folder.glob("chunk-*.npz"))
        return cls(paths, member)

    def _open(self, k: int) -> np.ndarray:
        path = self.paths[k]
        if path.suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            return np.asarray(z[self.member])

    def batches(self, size: int = BATCH) -> Iterator[tuple[int, np.ndarray]]:
        for k in range(len(self.paths)):
            shard = self._open(k)
            for lo in range(0, len(shard), size):
                batch = as_matrix(shard[lo : lo + size], "vectors")
                self.rows_read += len(batch)
                yield int(self.starts[k]) + lo, batch

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        for k in np.unique(shard_of).tolist():
            pick = shard_of == k
            out[pick] = self._open(k)[rows[pick] - self.starts[k]]
        self.rows_read += len(rows)
        return out


def source_of(vectors: np.ndarray | VectorSource) -> VectorSource:
    """``vectors`` as a source (arrays are wrapped)."""
    return ArraySource(vectors) if isinstance(vectors, np.ndarray) else vectors


def sample_rows(count: int, n: int, seed: int) -> np.ndarray:
    """``n`` distinct row numbers out of ``count``, drawn with ``seed``, sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=min(n, count), replace=False)).astype(np.int64)


def exact_top_k(source: VectorSource, queries: np.ndarray, k: int) -> np.ndarray:
    """The rows of the exact top ``k`` (inner product) of each query over ``source``, streamed by batch."""
    queries = as_matrix(queries, "queries")
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start, batch in source.batches():
        scores = queries @ batch.T
        rows = np.broadcast_to(np.arange(start, start + len(batch)), scores.shape)
        all_s, all_i = np.hstack([best_s, scores]), np.hstack([best_i, rows])
        keep = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(all_s, keep, 1), np.take_along_axis(all_i, keep, 1)
    return best_i
