"""Bringing a library up to date: scan, catalogue, embed what has no vector, update the index.

A rescan stats every file and hashes only new files and files whose size or mtime changed; a touched file
whose bytes are the same keeps its row. Contents are embedded once per model: a moved, renamed or copied
file finds its content's vector by hash (0 embedded). Each embedded batch is one chunk and one catalogue
transaction (see :mod:`core.library.library` for the commit order). The saved index is rewritten only once
the changes it lacks pass ``SAVE_AFTER`` files (or ``SAVE_AFTER_SHARE`` of the library); until then it is
caught up in memory, from the vector chunks, by whoever opens it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.data.phash import file_fingerprint
from core.index.mutable import MutableIndex
from core.library.catalogue import ModelKey, NewFile
from core.library.library import Library
from core.library.scan import Excludes, image_extensions, read_file, walk, with_fingerprints
from core.library.vectors import VectorStore
from core.locks import exclusive
from core.progress import Reporter, ensure
from core.safe_text import visible

if TYPE_CHECKING:  # the engine (torch, open_clip) is imported when there is something to embed
    from core.embed.engine import ImageBatch
    from core.models.loading import LoadedModel

HASH_BATCH = 500
DEFAULT_BATCH = 32
# The saved index is rewritten once the file changes it lacks pass this many, or this share of the library:
# until then whoever opens it catches it up from the vector chunks (a few chunks to read, not a 40 MB index
# to load and write on every small rescan).
ImageEncoder = Callable[..., "Iterable[ImageBatch]"]
"""Called as ``encode(paths, batch_size, reporter=reporter)``: the batches of ``iter_image_batches``."""
SAVE_AFTER = 500
SAVE_AFTER_SHARE = 0.05


@dataclass
class UpdateStats:
    """What one update did, with its timings in seconds."""

    files: int = 0
    new: int = 0
    changed: int = 0
    touched: int = 0
    gone: int = 0
    hashed: int = 0
    unreadable: int = 0
    embedded: int = 0
    failed: int = 0
    indexed: int = 0
    missing_roots: list[str] = field(default_factory=list)
    scan_s: float = 0.0
    hash_s: float = 0.0
    embed_s: float = 0.0
    index_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _under(path: str, folders: list[str]) -> bool:
    return any(path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def scan(lib: Library, reporter: Reporter, stats: UpdateStats) -> None:
    """Walk the roots and bring the catalogue's file rows up to date (in transactions of HASH_BATCH)."""
    cat = lib.catalogue
    roots = cat.roots()
    stats.missing_roots = [r for r in roots if not os.path.isdir(r)]
    for root in stats.missing_roots:
        reporter.log(f"library {lib.name}: {visible(root)} is missing; its files are kept until it is back")
    start = time.perf_counter()
    known = cat.stamps()
    seen: dict[str, tuple[int, int]] = {}
    for path, size, mtime in walk(roots, Excludes.of(cat.excludes()), image_extensions()):
        seen[path] = (size, mtime)
        if len(seen) % 2000 == 0:
            reporter.update("scan files", len(seen))
    reporter.update("scan files", len(seen), len(seen))
    stats.files = len(seen)
    gone = [row[0] for p, row in known.items() if p not in seen and not _under(p, stats.missing_roots)]
    todo = [(p, s, m) for p, (s, m) in seen.items() if p not in known or known[p][1:3] != (s, m)]
    stats.gone, stats.scan_s = len(gone), time.perf_counter() - start
    start = time.perf_counter()
    if gone and not todo:
        cat.apply_scan(gone, [], [], [])
    for lo in range(0, len(todo), HASH_BATCH):
        reporter.check_cancelled()
        rows = [read_file(p, s, m) for p, s, m in todo[lo : lo + HASH_BATCH]]
        rows = with_fingerprints(rows, cat.fingerprints_of([r.hash for r in rows if r.hash]))
        _record(lib, rows, known, gone if lo == 0 else [], stats)
        reporter.update("hash new or changed files", min(lo + HASH_BATCH, len(todo)), len(todo))
    stats.hashed, stats.hash_s = len(todo), time.perf_counter() - start


def _record(
    lib: Library,
    rows: list[NewFile],
    known: dict[str, tuple[int, int, int, str | None]],
    gone: list[int],
    stats: UpdateStats,
) -> None:
    touched: list[tuple[int, int, int]] = []
    replaced: list[int] = []
    new: list[NewFile] = []
    for row in rows:
        old = known.get(row.path)
        stats.unreadable += row.failed is not None
        if old is not None and old[3] is not None and old[3] == row.hash:
            touched.append((old[0], row.size, row.mtime_ns))
            stats.touched += 1
            continue
        if old is not None:
            replaced.append(old[0])
            stats.changed += 1
        else:
            stats.new += 1
        new.append(row)
    lib.catalogue.apply_scan(gone, touched, replaced, new)


def hash_missing(lib: Library, reporter: Reporter) -> int:
    """Take the perceptual hash and thumbnail of every readable file catalogued without them (by an older format),
    in transactions of HASH_BATCH; the caller holds the library's lock. Returns how many were hashed."""
    todo = lib.catalogue.unhashed()
    for lo in range(0, len(todo), HASH_BATCH):
        reporter.check_cancelled()
        part = todo[lo : lo + HASH_BATCH]
        lib.catalogue.set_fingerprints([(i, file_fingerprint(p)) for i, p in part])
        reporter.update("perceptual hashes", min(lo + HASH_BATCH, len(todo)), len(todo))
    return len(todo)


def embed_missing(
    lib: Library,
    lm: LoadedModel | None,
    model: ModelKey,
    store: VectorStore,
    reporter: Reporter,
    stats: UpdateStats,
    batch_size: int = DEFAULT_BATCH,
    encode: ImageEncoder | None = None,
) -> None:
    """Embed every content without a vector for ``model`` (with ``encode``, else this process's engine and
    ``lm``): per batch, one durable chunk, then one catalogue transaction (a failed image marks every file
    holding its content). Batches may arrive in any order."""
    cat = lib.catalogue
    todo = cat.missing_vectors(model.key)
    if not todo:
        return
    paths = [Path(p) for _, p in todo]
    if encode is None:
        if lm is None:
            raise ValueError("embedding needs a loaded model or an encoder")
        from core.embed.engine import iter_image_batches

        encode = partial(iter_image_batches, lm)
    batches = encode(paths, batch_size, reporter=reporter)  # a model loaded on demand is loaded by now
    start = time.perf_counter()
    for batch in batches:
        failed_at = {pos: reason for pos, reason in batch.failed}
        ok = [j for j, pos in enumerate(batch.indices.tolist()) if pos not in failed_at]
        hashes = [todo[int(batch.indices[j])][0] for j in ok]
        vectors = batch.embeddings[ok]
        number, sha = store.append(hashes, vectors) if hashes else (-1, "")
        failed = [(todo[pos][0], visible(reason)[:200]) for pos, reason in failed_at.items()]
        cat.add_vectors(model.key, number, sha, hashes, failed)
        if hashes:
            store.remember(number, vectors)
        stats.embedded += len(hashes)
        stats.failed += len(failed)
    stats.embed_s = time.perf_counter() - start


def update(
    lib: Library,
    lm: LoadedModel | None,
    model: ModelKey,
    reporter: Reporter | None = None,
    batch_size: int = DEFAULT_BATCH,
    encode: ImageEncoder | None = None,
) -> UpdateStats:
    """Rescan ``lib`` and embed what changed with ``lm`` (``model`` is its key; ``encode``, when given, runs
    it elsewhere, e.g. on Ray, or loads it when first needed, and ``lm`` may then be None); save the index
    once the changes it lacks pass :data:`SAVE_AFTER` (until then every opener catches it up from the
    vectors)."""
    reporter = ensure(reporter)
    stats = UpdateStats()
    with exclusive(lib.folder, reporter.log):
        lib.set_target(model)
        scan(lib, reporter, stats)
        hash_missing(lib, reporter)
        store = lib.store(model)
        store.prune_orphans()
        embed_missing(lib, lm, model, store, reporter, stats, batch_size, encode)
        start = time.perf_counter()
        lib.promote_if_complete(model)
        lag = lib.add_lag(model, stats.new + stats.changed + stats.gone + stats.embedded)
        count = lib.catalogue.embedded_count(model.key)
        if lib.index_is_current(model) or (
            lag <= max(SAVE_AFTER, SAVE_AFTER_SHARE * count) and lib.has_index(model)
        ):
            stats.index_s, stats.indexed = time.perf_counter() - start, count
            return stats
        index = lib.index(model, store, reporter)
        if not lib.matching_spec(index, model):  # the library grew past the exact/HNSW crossover
            index = MutableIndex.empty(model.dim, lib.spec_for(model))
            lib.sync_index(index, model, store)
            lib.saved_generation.pop(model.key, None)
        lib.save_index(index, model)
        store.write_manifest()
        stats.index_s = time.perf_counter() - start
        stats.indexed = index.count
    return stats


def vectors_by_path(lib: Library, model: ModelKey) -> dict[str, np.ndarray]:
    """Every indexed file's vector, by path (for tests and benchmarks comparing builds)."""
    store = lib.store(model)
    indexed = lib.catalogue.indexed(model.key)
    rows = lib.catalogue.files_by_id(indexed)
    ids = sorted(indexed)
    found, vectors = store.rows([indexed[i] for i in ids])
    kept = [i for i, ok in zip(ids, found.tolist(), strict=True) if ok]
    return {rows[i].path: v for i, v in zip(kept, vectors, strict=True)}
