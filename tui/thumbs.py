"""Image thumbnails for previews: decoded off the UI thread, scaled down once, kept in a small LRU cache."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

# Pixels per terminal cell to decode for: enough for Sixel/Kitty at common font sizes; half-cell needs less.
CELL_PX = (12, 24)
MAX_PX = 768
_CACHE_SIZE = 512

_cache: OrderedDict[tuple[Path, int, int], Image.Image] = OrderedDict()
_lock = threading.Lock()


def box_for(cols: int, rows: int) -> tuple[int, int]:
    """The pixel box a preview of ``cols`` × ``rows`` cells is decoded into."""
    return min(MAX_PX, max(1, cols) * CELL_PX[0]), min(MAX_PX, max(1, rows) * CELL_PX[1])


def cached(path: Path, box: tuple[int, int]) -> Image.Image | None:
    """The thumbnail of ``path`` for ``box`` if it was decoded before."""
    key = (path, *box)
    with _lock:
        image = _cache.get(key)
        if image is not None:
            _cache.move_to_end(key)
        return image


def load(path: Path, box: tuple[int, int]) -> Image.Image:
    """Decode ``path`` (EXIF-oriented RGB, via the core) and shrink it into ``box``; cached.

    Raises the core's ``ImageLoadError`` (a CapsearchError) for an unreadable image.
    """
    hit = cached(path, box)
    if hit is not None:
        return hit
    from core.data.images import load_rgb

    image = load_rgb(path)
    image.thumbnail(box, Image.Resampling.BILINEAR)
    with _lock:
        _cache[(path, *box)] = image
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return image
