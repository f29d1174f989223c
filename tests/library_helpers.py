"""Helpers for the library tests: tiny generated photo folders and a library over them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core.library.library import Library, add_folders, model_key
from core.library.update import UpdateStats, update
from core.models.loading import LoadedModel


def write_photo(path: Path, seed: int, exif_date: str | None = None, camera: str | None = None) -> Path:
    """A small random JPEG (distinct per seed), optionally with an EXIF date and camera model."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
    exif = Image.Exif()
    if exif_date:
        exif.get_ifd(0x8769)[36867] = exif_date
    if camera:
        exif[272] = camera
    image.save(path, quality=90, exif=exif.tobytes())
    return path


def scene(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A gradient with a few random shapes: structured like a photo, distinct per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    ramp = np.linspace(0, 1, w)[None, :, None] * rng.random(3) + np.linspace(0, 1, h)[
        :, None, None
    ] * rng.random(3)
    image = Image.fromarray((ramp / ramp.max() * 200).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, w - 20), rng.integers(0, h - 20)
        box = (int(x), int(y), int(x + rng.integers(15, 60)), int(y + rng.integers(15, 50)))
        draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image


def make_folder(root: Path, n: int, seed: int = 0) -> list[Path]:
    return [write_photo(root / f"d{i % 3}" / f"s{i % 2}" / f"p{i}.jpg", seed * 10_000 + i) for i in range(n)]


def bump_mtime(path: Path, step: int = 1) -> None:
    """Move a file's mtime on by ``step`` seconds (rewrites in one clock tick must still count as changes)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + step * 1_000_000_000))


def library_of(
    name: str, folders: list[Path], lm: LoadedModel, kind: str = "exact", **kw
) -> tuple[Library, UpdateStats]:
    lib = add_folders(name, folders, index_kind=kind, **kw)
    return lib, update(lib, lm, key_of(lm))


def key_of(lm: LoadedModel):
    return model_key("capsearch-tiny", lm)
