"""The embeddings of a dataset split, cached under ``embeddings/<model-id>/<dataset>/<split>/``
(``<split>.bf16/`` in bf16: see :func:`core.paths.split_folder`).

Layout: ``manifest.json`` (model id, precision, dims, counts, ordered image ids, checksum of the inputs,
failed images), ``image_emb.npy`` ``[n_images, d]`` and ``caption_emb.npy`` ``[n_captions, d]``
(L2-normalised float32; captions in record order, then source order).

The checksum covers the model id and precision, and each record's id, image path, image file size and
mtime, and captions: a cache made by another model or over changed images or captions is stale and rebuilt.
Work is saved in chunks of ``chunk_size`` images (with their captions), each file written atomically, and
the in-progress manifest records the checksum they belong to: an interrupted run resumes from its completed
chunks. When every chunk is done the chunks are joined into the two arrays and the manifest is completed.

The files themselves (and the keyed chunks a photo library keeps its vectors in) are :mod:`core.embed.chunks`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import file_sha256, save_npy, write_json
from core.data.records import ImageRecord, PreparedDataset
from core.embed.chunks import (
    CAPTION_FILE,
    FORMAT,
    IMAGE_FILE,
    MANIFEST,
    Chunk,
    chunk_file,
    load_chunk,
    save_chunk,
)
from core.embed.engine import encode_texts, iter_image_batches
from core.embed.fp32_fast import vectors_label
from core.locks import exclusive
from core.models.loading import LoadedModel
from core.paths import embeddings_dir, safe_name, split_folder
from core.progress import Reporter, ensure

DEFAULT_CHUNK = 512


@dataclass
class SplitEmbeddings:
    """A split's records with their image and caption embeddings (rows aligned with the lists)."""

    records: list[ImageRecord]
    image_emb: np.ndarray
    caption_emb: np.ndarray
    captions: list[str]
    caption_image: np.ndarray
    failed: list[tuple[str, str]]
    model_id: str
    cache_dir: Path
    precision: str = "fp32"
    reused: bool = False
    encode_seconds: float = 0.0


def cache_dir(model_id: str, dataset: str, split: str, precision: str = "fp32") -> Path:
    return embeddings_dir() / safe_name(model_id) / safe_name(dataset) / split_folder(split, precision)


def _flatten_captions(records: list[ImageRecord]) -> tuple[list[str], np.ndarray]:
    captions = [c for r in records for c in r.captions]
    owner = np.repeat(np.arange(len(records), dtype=np.int64), [len(r.captions) for r in records])
    return captions, owner


def input_checksum(lm: LoadedModel, dataset: PreparedDataset, records: list[ImageRecord]) -> str:
    """SHA-256 over the model id, what its vectors are computed in (:func:`vectors_label`) and every
    record's id, image file (size, mtime) and captions."""
    digest = hashlib.sha256(json.dumps([FORMAT, lm.model_id, vectors_label(lm)]).encode())
    for rec in records:
        try:
            st = dataset.image_path(rec).stat()
            stamp: list[int] | None = [st.st_size, st.st_mtime_ns]
        except OSError:
            stamp = None
        digest.update(json.dumps([rec.id, rec.image, stamp, list(rec.captions)]).encode())
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def clear_cache(folder: Path) -> None:
    for path in [folder / MANIFEST, folder / IMAGE_FILE, folder / CAPTION_FILE, *folder.glob("chunk-*.npz")]:
        path.unlink(missing_ok=True)


def _load_complete(
    folder: Path, n_images: int, n_captions: int, dim: int, sha256: dict[str, str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays when their bytes match the manifest's sha256 and their shapes its counts, else
    None (empty, truncated or overwritten files are all caught here)."""
    try:
        if any(file_sha256(folder / name) != sha256.get(name) for name in (IMAGE_FILE, CAPTION_FILE)):
            return None
        images = np.load(folder / IMAGE_FILE, allow_pickle=False)
        captions = np.load(folder / CAPTION_FILE, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if images.shape != (n_images, dim) or captions.shape != (n_captions, dim):
        return None
    return images, captions


def _stale_reason(
    manifest: dict[str, Any], model_id: str, precision: str, checksum: str, chunk_size: int
) -> str | None:
    if manifest.get("format") != FORMAT:
        return "it has an older format"
    if manifest.get("model_id") != model_id or manifest.get("precision") != precision:
        return (
            f"it was made by {manifest.get('model_id')} in {manifest.get('precision')}, "
            f"not {model_id} in {precision}"
        )
    if manifest.get("checksum") != checksum:
        return "the images or captions changed since"
    if not manifest.get("complete") and manifest.get("chunk_size") != chunk_size:
        return "its unfinished chunks used another chunk size"
    return None


class _Shifted(Reporter):
    """Forwards to ``parent`` with progress shifted by ``offset`` of ``total`` (cumulative over calls)."""

    def __init__(self, parent: Reporter, offset: int, total: int) -> None:
        super().__init__()
        self.parent, self.offset, self.total = parent, offset, total

    def update(self, stage: str, done: int, total: int | None = None, **info: Any) -> None:
        self.parent.update(stage, self.offset + done, self.total, **info)

    def log(self, message: str) -> None:
        self.parent.log(message)

    def check_cancelled(self) -> None:
        self.parent.check_cancelled()


"""A chunk's image embeddings, caption embeddings and failed images (row within the chunk, reason)."""


@dataclass(frozen=True)
class Chunks:
    """How a split's records are cut into chunks, and where each record's captions start."""

    bounds: list[tuple[int, int]]
    caption_start: np.ndarray

    @classmethod
    def of(cls, n_records: int, caption_image: np.ndarray, chunk_size: int) -> Chunks:
        bounds = [(s, min(s + chunk_size, n_records)) for s in range(0, n_records, chunk_size)]
        return cls(bounds, np.searchsorted(caption_image, np.arange(n_records + 1)))

    def captions(self, k: int) -> tuple[int, int]:
        """The caption rows of chunk ``k``: (first, end)."""
        lo, hi = self.bounds[k]
        return int(self.caption_start[lo]), int(self.caption_start[hi])


def _reuse_cache(
    folder: Path,
    result: SplitEmbeddings,
    checksum: str,
    chunk_size: int,
    embed_dim: int,
    where: str,
    reporter: Reporter,
) -> dict[str, Any] | None:
    """Fill ``result`` from a complete valid cache (then ``result.reused``); else the manifest of the
    unfinished run to resume, or None after clearing a stale or damaged cache."""
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    reason = _stale_reason(manifest, result.model_id, result.precision, checksum, chunk_size)
    if reason is None and not manifest.get("complete"):
        return manifest
    if reason is None:
        arrays = _load_complete(
            folder, len(result.records), len(result.captions), embed_dim, manifest.get("sha256") or {}
        )
        if arrays is not None:
            for stray in folder.glob("chunk-*.npz"):  # a run killed after its last write, before this
                stray.unlink(missing_ok=True)
            result.image_emb, result.caption_emb = arrays
            result.failed = [(str(i), str(r)) for i, r in manifest.get("failed", [])]
            result.reused, result.encode_seconds = True, float(manifest.get("encode_seconds", 0.0))
            reporter.log(
                f"reusing cached embeddings for {where} ({len(result.records)} images, {len(result.captions)} captions)"
            )
            return None
        reporter.log(
            f"embedding cache for {where} is damaged (its files do not match their sha256); rebuilding"
        )
    else:
        reporter.log(f"embedding cache for {where} is stale ({reason}); rebuilding")
    clear_cache(folder)
    return None


def _load_done_chunks(folder: Path, chunks: Chunks, embed_dim: int) -> dict[int, Chunk]:
    done = {}
    for k, (lo, hi) in enumerate(chunks.bounds):
        first, end = chunks.captions(k)
        found = load_chunk(chunk_file(folder, k), hi - lo, end - first, embed_dim)
        if found is not None:
            done[k] = found
    return done


def _encode_missing(
    lm: LoadedModel,
    dataset: PreparedDataset,
    result: SplitEmbeddings,
    chunks: Chunks,
    done: dict[int, Chunk],
    sizes: tuple[int, int, int | None, int],
    reporter: Reporter,
    backend: str = "torch",
) -> None:
    """Encode the chunks not in ``done`` (images, then a full chunk's captions), saving and adding each."""
    batch_size, text_batch_size, workers, chunk_size = sizes
    records, bounds = result.records, chunks.bounds
    todo_rows = [i for k in range(len(bounds)) if k not in done for i in range(*bounds[k])]
    paths = [dataset.image_path(records[i]) for i in todo_rows]
    pending: dict[int, np.ndarray] = {}
    filled: dict[int, int] = {}
    failed_rows: dict[int, list[tuple[int, str]]] = {}
    captions_done = sum(len(c[1]) for c in done.values())
    image_progress = _Shifted(reporter, len(records) - len(todo_rows), len(records))
    for batch in iter_image_batches(lm, paths, batch_size, workers, image_progress, backend):
        for pos, row in zip(batch.indices.tolist(), batch.embeddings, strict=True):
            i = todo_rows[pos]
            k = i // chunk_size
            lo, hi = bounds[k]
            pending.setdefault(k, np.zeros((hi - lo, lm.embed_dim), np.float32))[i - lo] = row
            filled[k] = filled.get(k, 0) + 1
        for pos, reason in batch.failed:
            i = todo_rows[pos]
            failed_rows.setdefault(i // chunk_size, []).append((i - bounds[i // chunk_size][0], reason))
        for k in [k for k, n in filled.items() if n == bounds[k][1] - bounds[k][0]]:
            first, end = chunks.captions(k)
            caption_progress = _Shifted(reporter, captions_done, len(result.captions))
            cap = encode_texts(lm, result.captions[first:end], text_batch_size, caption_progress)
            captions_done += end - first
            done[k] = (pending.pop(k), cap, sorted(failed_rows.pop(k, [])))
            del filled[k]
            save_chunk(chunk_file(result.cache_dir, k), *done[k])
            reporter.update("embed chunks", len(done), len(bounds))


def _join_chunks(result: SplitEmbeddings, chunks: Chunks, done: dict[int, Chunk]) -> None:
    ordered = [done[k] for k in range(len(chunks.bounds))]
    if ordered:
        result.image_emb = np.concatenate([c[0] for c in ordered])
        result.caption_emb = np.concatenate([c[1] for c in ordered])
    result.failed = [
        (result.records[lo + j].id, reason)
        for (lo, _), c in zip(chunks.bounds, ordered, strict=True)
        for j, reason in c[2]
    ]


def _manifest_base(
    lm: LoadedModel,
    dataset: PreparedDataset,
    split: str,
    records: list[ImageRecord],
    caption_count: int,
    checksum: str,
    chunk_size: int,
) -> dict[str, Any]:
    """The manifest fields of a cache, complete or not."""
    return {
        "format": FORMAT,
        "model_id": lm.model_id,
        "precision": lm.precision,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "split": split,
        "dims": lm.embed_dim,
        "count": len(records),
        "caption_count": caption_count,
        "ids": [r.id for r in records],
        "checksum": checksum,
        "chunk_size": chunk_size,
    }


def _save_complete(result: SplitEmbeddings, base: dict[str, Any], n_chunks: int) -> None:
    """Write the joined arrays, then the completed manifest, then drop the chunks."""
    folder = result.cache_dir
    save_npy(folder / IMAGE_FILE, result.image_emb)
    save_npy(folder / CAPTION_FILE, result.caption_emb)
    sha256 = {name: file_sha256(folder / name) for name in (IMAGE_FILE, CAPTION_FILE)}
    write_json(
        folder / MANIFEST,
        {
            **base,
            "complete": True,
            "encode_seconds": result.encode_seconds,
            "failed": result.failed,
            "sha256": sha256,
        },
    )
    for k in range(n_chunks):
        chunk_file(folder, k).unlink(missing_ok=True)


def split_embeddings(
    lm: LoadedModel,
    dataset: PreparedDataset,
    split: str,
    reporter: Reporter | None = None,
    *,
    batch_size: int = 64,
    text_batch_size: int = 256,
    workers: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    backend: str = "torch",
) -> SplitEmbeddings:
    """The embeddings of ``dataset``'s ``split`` for ``lm``: from a valid cache, resumed, or encoded.
    ``backend``: the image backend of :func:`core.embed.engine.iter_image_batches` (torch or openvino; both
    write the same cache, their vectors agreeing to float rounding in fp32)."""
    reporter = ensure(reporter)
    records = dataset.split(split)
    captions, caption_image = _flatten_captions(records)
    folder = cache_dir(lm.model_id, dataset.name, split, lm.precision)
    checksum = input_checksum(lm, dataset, records)
    result = SplitEmbeddings(
        records=records,
        image_emb=np.zeros((0, lm.embed_dim), np.float32),
        caption_emb=np.zeros((0, lm.embed_dim), np.float32),
        captions=captions,
        caption_image=caption_image,
        failed=[],
        model_id=lm.model_id,
        cache_dir=folder,
        precision=lm.precision,
    )
    where = f"{lm.model_id} / {dataset.name} / {split}"
    with exclusive(folder, reporter.log):
        _fill(
            result,
            lm,
            dataset,
            split,
            checksum,
            (batch_size, text_batch_size, workers, chunk_size),
            where,
            reporter,
            backend,
        )
    return result


def _fill(
    result: SplitEmbeddings,
    lm: LoadedModel,
    dataset: PreparedDataset,
    split: str,
    checksum: str,
    sizes: tuple[int, int, int | None, int],
    where: str,
    reporter: Reporter,
    backend: str = "torch",
) -> None:
    """Fill ``result`` from a valid cache, or resume or start encoding (the caller holds the folder's lock)."""
    folder, records, chunk_size = result.cache_dir, result.records, sizes[3]
    manifest = _reuse_cache(folder, result, checksum, chunk_size, lm.embed_dim, where, reporter)
    if result.reused:
        return

    base = _manifest_base(lm, dataset, split, records, len(result.captions), checksum, chunk_size)
    spent = float(manifest.get("encode_seconds", 0.0)) if manifest else 0.0
    write_json(folder / MANIFEST, {**base, "complete": False, "encode_seconds": spent})
    start_time = time.perf_counter()

    chunks = Chunks.of(len(records), result.caption_image, chunk_size)
    done = _load_done_chunks(folder, chunks, lm.embed_dim)
    if done:
        reporter.log(f"resuming {where}: {len(done)} of {len(chunks.bounds)} chunks already done")
    try:
        _encode_missing(lm, dataset, result, chunks, done, sizes, reporter, backend)
    finally:
        spent += time.perf_counter() - start_time
        write_json(folder / MANIFEST, {**base, "complete": False, "encode_seconds": round(spent, 3)})

    _join_chunks(result, chunks, done)
    result.encode_seconds = round(spent, 3)
    _save_complete(result, base, len(chunks.bounds))
    if result.failed:
        reporter.log(f"{len(result.failed)} image(s) of {where} could not be read; their rows are zero")
