"""Pixel checks of near-duplicate candidates: tiny colour thumbnails compared under small crops.

A 64-bit perceptual hash (:mod:`core.data.phash`) is blind to colour and coarse: unrelated photos with the
same layout of light and dark collide, and a cropped copy drifts several bits away. A thumbnail settles
both. Every image keeps a 32x32 RGB thumbnail (3,072 bytes, taken from the decode that hashes it); two
thumbnails match when some crop of one, resampled, correlates with the whole of the other: the crops remove
3-10% of each side's length, anchored at the corners, edge middles or centre, in both directions (either photo may be the crop).
The correlation is the cosine of the two views after subtracting each view's mean over all pixels and
channels, so a brightness change (every channel scaled) keeps it while a change of colour does not.

On the planted pairs of a generated library (``scripts/bench_near_duplicates.py``), JPEG re-encodes,
half-size copies, 5% crops and brightness shifts and their combinations score 0.96-1.0, while unrelated
images within the same hash distance score at most 0.945.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

SIDE = 32  # stored thumbnail: SIDE x SIDE RGB, row-major bytes
THUMB_BYTES = SIDE * SIDE * 3
VIEW = 16  # views are compared at VIEW x VIEW
_CROPS = (0.03, 0.05, 0.07, 0.1)  # share of each side removed


def _boxes() -> list[tuple[float, float, float, float]]:
    """The whole thumbnail, then each crop at its corners, edge middles and centre."""
    boxes = [(0.0, 0.0, float(SIDE), float(SIDE))]
    for crop in _CROPS:
        for ox in (0.0, crop / 2, crop):
            for oy in (0.0, crop / 2, crop):
                boxes.append((ox * SIDE, oy * SIDE, (ox + 1 - crop) * SIDE, (oy + 1 - crop) * SIDE))
    return boxes


def _axis(lo: float, hi: float) -> np.ndarray:
    """The (VIEW, SIDE) matrix that resamples [lo, hi) of a SIDE-long axis to VIEW samples the way Pillow's
    bilinear filter does (it is separable and linear, so a view is ``rows @ image @ columns.T``)."""
    out = np.empty((VIEW, SIDE), np.float32)
    for k in range(SIDE):
        basis = Image.fromarray(np.eye(1, SIDE, k, dtype=np.float32), "F")
        sampled = basis.resize((VIEW, 1), Image.Resampling.BILINEAR, box=(lo, 0.0, hi, 1.0))
        out[:, k] = np.asarray(sampled, np.float32)[0]
    return out


_BOXES = _boxes()
_ROWS = np.stack([_axis(top, bottom) for _, top, _, bottom in _BOXES])
_COLUMNS = np.stack([_axis(left, right) for left, _, right, _ in _BOXES])


def thumbnail(image: Image.Image) -> bytes:
    """The stored thumbnail of an (already oriented) image."""
    small = image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BOX)
    return small.tobytes()


def _unit(pixels: np.ndarray) -> np.ndarray:
    flat = pixels.reshape(len(pixels), -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(centred, axis=1, keepdims=True)
    return np.divide(centred, norm, out=np.zeros_like(centred), where=norm > 1e-6)


def _pixels(thumb: bytes) -> np.ndarray:
    if len(thumb) != THUMB_BYTES:
        raise ValueError(f"a thumbnail has {THUMB_BYTES} bytes, not {len(thumb)}")
    return np.frombuffer(thumb, np.uint8).reshape(SIDE, SIDE, 3).astype(np.float32)


def _present(thumb: bytes | None) -> bytes:
    assert thumb, "only pairs of thumbnails present are compared"
    return thumb


def _resampled(thumb: bytes, boxes: slice) -> np.ndarray:
    channels = _pixels(thumb).transpose(2, 0, 1)[None]  # (1, 3, SIDE, SIDE)
    rows, columns = _ROWS[boxes, None], _COLUMNS[boxes, None]
    return _unit(rows @ channels @ columns.transpose(0, 1, 3, 2))  # (boxes, 3, VIEW, VIEW) -> rows


def views(thumb: bytes) -> np.ndarray:
    """Every crop of ``thumb`` resampled to VIEW x VIEW, centred and unit-length (rows; row 0: whole)."""
    return _resampled(thumb, slice(None))


def views_whole(thumb: bytes) -> np.ndarray:
    """The whole-thumbnail view alone (row 0 of :func:`views`)."""
    return _resampled(thumb, slice(0, 1))[0]


def pixel_scores(thumbs: Sequence[bytes | None], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The pixel match of each pair ``(i[k], j[k])`` of rows into ``thumbs``: the best correlation of a
    crop of one with the whole of the other, in [-1, 1]; NaN where either thumbnail is missing or empty."""
    out = np.full(len(i), np.nan, np.float32)
    have = np.array([bool(t) for t in thumbs], bool)
    checked = np.flatnonzero(have[i] & have[j]) if len(i) else np.zeros(0, np.int64)
    if not len(checked):
        return out
    rows = np.unique(np.concatenate([i[checked], j[checked]]))
    whole = {int(r): views_whole(_present(thumbs[r])) for r in rows}
    best = np.full(len(checked), -1.0, np.float32)
    for side, other in ((i, j), (j, i)):  # crops of one side against the other's whole
        order = checked[np.argsort(side[checked], kind="stable")]
        starts = np.flatnonzero(np.r_[True, np.diff(side[order]) != 0])
        for lo, hi in zip(starts, [*starts[1:], len(order)], strict=True):
            pairs = order[lo:hi]
            crops = views(_present(thumbs[int(side[pairs[0]])]))
            targets = np.stack([whole[int(r)] for r in other[pairs]])
            score = (crops @ targets.T).max(axis=0)
            where = np.searchsorted(checked, pairs)
            best[where] = np.maximum(best[where], score)
    out[checked] = best
    return out
