"""A library's vectors for one model key: keyed chunk files (:func:`core.embed.chunks.save_keyed_chunk`)
under ``vectors/<key>/``, one per embedded batch, and a ``manifest.json`` in the embedding cache's format.

The catalogue's ``chunks`` table is the truth about which chunk files count (a chunk written by a run
killed before its catalogue transaction is an orphan, overwritten by the next run) and their sha256, which
every read checks: a damaged chunk is dropped from the catalogue and its contents embedded again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.atomic import write_json
from core.embed.chunks import FORMAT, MANIFEST, chunk_file, load_keyed_chunk, save_keyed_chunk
from core.library.catalogue import Catalogue, ModelKey


class VectorStore:
    """Read and append the chunks of one model key (the caller holds the library's lock to write)."""

    def __init__(self, folder: Path, catalogue: Catalogue, model: ModelKey) -> None:
        self.folder = folder
        self.catalogue = catalogue
        self.model = model
        self._loaded: dict[int, np.ndarray] = {}

    def append(self, hashes: list[str], vectors: np.ndarray) -> tuple[int, str]:
        """Write the next chunk durably (fsync + rename); (chunk number, sha256) for the catalogue."""
        number = self.catalogue.next_chunk(self.model.key)
        sha = save_keyed_chunk(
            chunk_file(self.folder, number), hashes, np.ascontiguousarray(vectors, np.float32)
        )
        return number, sha

    def remember(self, number: int, vectors: np.ndarray) -> None:
        """Keep a chunk just written (and committed) in memory."""
        self._loaded[number] = vectors

    def chunk(self, number: int) -> np.ndarray | None:
        """The vectors of a committed chunk, checked against its sha256; None (and the chunk forgotten by
        the catalogue) when it is missing or damaged."""
        if number in self._loaded:
            return self._loaded[number]
        sha, count = self.catalogue.chunks(self.model.key).get(number, ("", -1))
        found = load_keyed_chunk(chunk_file(self.folder, number), sha, self.model.dim)
        if found is None or len(found[0]) != count:
            self.catalogue.drop_chunk(self.model.key, number)
            return None
        self._loaded[number] = found[1]
        return found[1]

    def rows(self, places: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """The vectors at ``places`` (chunk, row): (mask of those found, vectors [found, d])."""
        found = np.zeros(len(places), bool)
        out = np.zeros((len(places), self.model.dim), np.float32)
        for i, (number, row) in enumerate(places):
            chunk = self.chunk(number)
            if chunk is not None and row < len(chunk):
                found[i], out[i] = True, chunk[row]
        return found, out[found]

    def write_manifest(self) -> None:
        """The embedding cache's manifest fields, for tools that list caches (the catalogue stays the truth)."""
        chunks = self.catalogue.chunks(self.model.key)
        write_json(
            self.folder / MANIFEST,
            {
                "format": FORMAT,
                "kind": "library",
                "model_id": self.model.model_id,
                "precision": self.model.precision,
                "dims": self.model.dim,
                "count": sum(n for _, n in chunks.values()),
                "chunks": {chunk_file(self.folder, k).name: sha for k, (sha, _) in sorted(chunks.items())},
                "complete": True,
            },
        )

    def prune_orphans(self) -> None:
        """Delete chunk files the catalogue does not list (left by a run killed mid-batch)."""
        listed = {chunk_file(self.folder, k).name for k in self.catalogue.chunks(self.model.key)}
        for path in self.folder.glob("chunk-*.npz"):
            if path.name not in listed:
                path.unlink(missing_ok=True)
