"""Perceptual hashes: a 64-bit DCT hash of an image's low frequencies (``imagehash.phash``), taken with
the image's pixel-check thumbnail (:mod:`core.data.pixel_match`) from one reduced decode.

Two images whose hashes differ in few bits look alike pixel for pixel, whatever their size or JPEG
quality: the hash is taken on a 32x32 greyscale thumbnail, so a half-size or re-encoded copy hashes like its
original, which embeddings (texture-sensitive at 224 px) do not guarantee. A hash is stored as 16 hex
digits; :func:`hash_matrix` packs many into rows of 8 bytes for FAISS binary (Hamming) search.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import imagehash
import numpy as np
from PIL import Image, ImageOps

from core.data.pixel_match import thumbnail

HASH_BITS = 64
_THUMB = 64  # JPEGs decode at the smallest DCT scale at least this big (phash resizes to 32x32 anyway)


def image_phash(image: Image.Image) -> str:
    """The 64-bit perceptual hash of an image, as 16 hex digits."""
    return str(imagehash.phash(image))


class Fingerprint(NamedTuple):
    """What near-duplicate search keeps of an image's pixels: its perceptual hash and its thumbnail."""

    phash: str
    thumb: bytes


def file_fingerprint(path: str | os.PathLike[str]) -> Fingerprint | None:
    """The perceptual hash and thumbnail of an image file (EXIF-oriented; JPEGs decoded at a reduced DCT
    scale), or None when it cannot be decoded (the embedding reports why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.draft("RGB", (_THUMB, _THUMB))
                im.load()
                oriented = ImageOps.exif_transpose(im)
                return Fingerprint(image_phash(oriented), thumbnail(oriented))
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, Warning):
        return None


def hash_matrix(hashes: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(rows of 8 bytes, mask of the hashes present): missing (``None`` or empty) hashes get a zero row
    and ``False``."""
    present = np.array([bool(h) for h in hashes], bool)
    packed = np.zeros((len(hashes), HASH_BITS // 8), np.uint8)
    for k, h in enumerate(hashes):
        if h:
            packed[k] = np.frombuffer(bytes.fromhex(h), np.uint8)
    return packed, present
