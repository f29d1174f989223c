"""The embedding cache's files: its format version, manifest name, the two complete arrays and the chunk files
(``.npz``, written atomically, read without pickle).

A chunk holds one run of a split's images and captions (:func:`save_chunk`). A keyed chunk
(:func:`save_keyed_chunk`) is the same file plus a ``keys`` array naming each row: a photo library
(:mod:`core.library`) keeps its vectors in them, keyed by content hash, with each chunk's sha256 recorded in
its catalogue. Nothing here needs torch or a model, so commands that only read vectors start fast.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_path, file_sha256

FORMAT = 2  # 2: the complete arrays' sha256 in the manifest, verified on every load
MANIFEST = "manifest.json"
IMAGE_FILE = "image_emb.npy"
CAPTION_FILE = "caption_emb.npy"
Chunk = tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]  # (images, captions, failed)


def chunk_file(folder: Path, k: int) -> Path:
    return folder / f"chunk-{k:05d}.npz"


def load_chunk(path: Path, n_images: int, n_captions: int, dim: int) -> Chunk | None:
    """A completed chunk ``(images, captions, failed)`` or None when missing or damaged."""
    try:
        with np.load(path, allow_pickle=False) as z:
            images, captions = z["images"], z["captions"]
            failed = list(zip(z["failed_index"].tolist(), z["failed_reason"].tolist(), strict=True))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    if images.shape != (n_images, dim) or captions.shape != (n_captions, dim):
        return None
    return images, captions, failed


def save_chunk(
    path: Path,
    images: np.ndarray,
    captions: np.ndarray,
    failed: list[tuple[int, str]],
    keys: list[str] | None = None,
) -> None:
    """Write one chunk atomically; ``keys`` (a keyed chunk, see :func:`save_keyed_chunk`) names each row."""
    extra: dict[str, Any] = {} if keys is None else {"keys": np.array(keys, dtype=np.str_)}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            images=images,
            captions=captions,
            failed_index=np.array([i for i, _ in failed], dtype=np.int64),
            failed_reason=np.array([r for _, r in failed], dtype=np.str_),
            **extra,
        )


# -- keyed chunks: the same chunk files, each row named by a key (a library's content hashes) ----------------
def save_keyed_chunk(path: Path, keys: list[str], images: np.ndarray) -> str:
    """Write a chunk of image vectors whose rows are named by ``keys`` (no captions, no failed rows: a
    library records failures in its catalogue); returns the file's sha256, which a reader must check."""
    if len(keys) != len(images):
        raise ValueError(f"{len(keys)} keys for {len(images)} vectors")
    dim = images.shape[1]
    save_chunk(path, images, np.zeros((0, dim), np.float32), [], keys)
    return file_sha256(path)


def load_keyed_chunk(path: Path, sha256: str, dim: int) -> tuple[list[str], np.ndarray] | None:
    """A keyed chunk's (keys, vectors) when its bytes hash to ``sha256``; None when missing or damaged."""
    try:
        if file_sha256(path) != sha256:
            return None
        with np.load(path, allow_pickle=False) as z:
            keys, images = z["keys"].tolist(), z["images"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    if images.ndim != 2 or images.shape != (len(keys), dim) or images.dtype != np.float32:
        return None
    return [str(k) for k in keys], images
