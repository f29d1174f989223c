"""Generate a synthetic photo library: many small, varied JPEGs in nested folders, with planted near-duplicates.

Each image is a random scene (a gradient, value-noise or stripe background, then 3-12 filled shapes and
lines, sometimes blurred or grainy) drawn at 96-160 px, so that image embeddings are spread out rather
than near-identical. Files sit in ``<year>/<year>-<month>/<event>/`` folders (some events hold an
``edited/`` subfolder); most carry EXIF DateTimeOriginal and camera Make/Model, about 15% carry none.

``--dups`` distinct source images get one planted near-duplicate each, written under another folder with
another name: re-encoded at a low JPEG quality, resized to half, cropped by 5%, or brightness-shifted
(the four in turn; every third pair also gets a second one of them). The manifest JSON (outside the
image tree: ``<out>.manifest.json`` unless ``--manifest``) lists the planted pairs.

    .venv/bin/python scripts/make_photo_library.py --n 20000 --out /tmp/photo-library --dups 500
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

CAMERAS = (
    ("Canon", "Canon EOS 80D"),
    ("NIKON CORPORATION", "NIKON D750"),
    ("SONY", "ILCE-7M3"),
    ("Apple", "iPhone 12"),
    ("samsung", "SM-G991B"),
    ("FUJIFILM", "X-T3"),
)
MIN_SIZE, MAX_SIZE = 128, 192
LOW_QUALITY = (40, 61)  # re-encoded at JPEG quality 40-60 (originals: 90)
TRANSFORMS = ("quality", "half", "crop", "brightness")
EXIF_IFD = 0x8769
DATE_TAKEN = 0x9003
MAKE, MODEL = 0x010F, 0x0110


@dataclass(frozen=True)
class Spec:
    """One file to write: its index, relative path, EXIF (or none) and, for a duplicate, its source."""

    index: int
    rel: str
    exif: tuple[str, str, str] | None
    source: int | None = None
    transforms: tuple[str, ...] = ()


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Value noise in [0, 1]: a few octaves of upsampled random grids."""
    out = np.zeros((size, size), np.float32)
    for octave in range(int(rng.integers(1, 4)), 6):
        cells = 2**octave
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        img = Image.fromarray((grid * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
        out += np.asarray(img, np.float32) / 255 / 2 ** (octave * float(rng.uniform(0.3, 1.0)))
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """An HxWx3 float background: gradient, noise or stripes between two random colours."""
    a, b = rng.random(3), rng.random(3)
    kind = int(rng.integers(3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    if kind == 0:
        t = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    elif kind == 1:
        t = _noise(rng, size)
    else:
        t = (np.sin(ramp * np.pi * rng.uniform(2, 14)) > rng.uniform(-0.5, 0.5)).astype(np.float32)
    return a * (1 - t[..., None]) + b * t[..., None]


def _shapes(rng: np.random.Generator, img: Image.Image) -> None:
    draw = ImageDraw.Draw(img, "RGBA")
    size = img.width
    for _ in range(int(rng.integers(3, 13))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3)) + (int(rng.integers(120, 256)),)
        x0, y0 = rng.integers(-size // 4, size, 2)
        w, h = rng.integers(size // 10, size // 1.5, 2)
        box = (int(x0), int(y0), int(x0 + w), int(y0 + h))
        kind = int(rng.integers(4))
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        elif kind == 2:
            pts = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(int(rng.integers(3, 7)))]
            draw.polygon(pts, fill=colour)
        else:
            draw.line(box, fill=colour, width=int(rng.integers(1, max(2, size // 12))))


def render(seed: int, index: int) -> Image.Image:
    """The deterministic scene of image ``index`` under ``seed``."""
    rng = np.random.default_rng([seed, index])
    size = int(rng.integers(MIN_SIZE, MAX_SIZE + 1))
    img = Image.fromarray((_background(rng, size) * 255).astype(np.uint8), "RGB")
    _shapes(rng, img)
    effect = rng.random()
    if effect < 0.2:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.0))))
    elif effect < 0.35:
        arr = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(5, 20), (size, size, 3))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.3:  # a landscape or portrait frame, like real photos
        w, h = (size, int(size * 0.75)) if rng.random() < 0.5 else (int(size * 0.75), size)
        img = img.crop((0, 0, w, h))
    return img


def near_duplicate(
    img: Image.Image, transforms: tuple[str, ...], rng: np.random.Generator
) -> tuple[Image.Image, int]:
    """``img`` altered by ``transforms``; returns the image and the JPEG quality to save it at."""
    quality = 90
    for t in transforms:
        if t == "quality":
            quality = int(rng.integers(*LOW_QUALITY))
        elif t == "half":
            img = img.resize((max(1, img.width // 2), max(1, img.height // 2)), Image.Resampling.BILINEAR)
        elif t == "crop":
            dx, dy = round(img.width * 0.05), round(img.height * 0.05)
            ox, oy = int(rng.integers(0, dx + 1)), int(rng.integers(0, dy + 1))
            img = img.crop((ox, oy, img.width - dx + ox, img.height - dy + oy))
        elif t == "brightness":
            img = ImageEnhance.Brightness(img).enhance(float(rng.choice([0.75, 0.8, 1.2, 1.25])))
    return img, quality


def _exif_bytes(exif: tuple[str, str, str] | None) -> bytes:
    if exif is None:
        return b""
    data = Image.Exif()
    data[MAKE], data[MODEL] = exif[0], exif[1]
    data.get_ifd(EXIF_IFD)[DATE_TAKEN] = exif[2]
    return data.tobytes()


def write_one(args: tuple[int, Spec, str]) -> int:
    """Render and save one file (a worker's task); returns its size in bytes."""
    seed, spec, out = args
    if spec.source is None:
        img, quality = render(seed, spec.index), 90
    else:
        img, quality = near_duplicate(
            render(seed, spec.source), spec.transforms, np.random.default_rng([seed, spec.index, 1])
        )
    buf = BytesIO()
    img.save(buf, "JPEG", quality=quality, exif=_exif_bytes(spec.exif))
    path = Path(out, spec.rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return len(buf.getvalue())


def _folders(rng: np.random.Generator, count: int) -> list[str]:
    out = []
    for i in range(count):
        year = 2010 + i % 12
        month = 1 + int(rng.integers(12))
        folder = f"{year}/{year}-{month:02d}/event-{i:03d}"
        out.append(folder + ("/edited" if rng.random() < 0.15 else ""))
    return out


def _exif_for(rng: np.random.Generator, folder: str) -> tuple[str, str, str] | None:
    if rng.random() < 0.15:
        return None
    make, model = CAMERAS[int(rng.integers(len(CAMERAS)))]
    year, month = folder.split("/")[1].split("-")
    day, hour, minute = int(rng.integers(1, 29)), int(rng.integers(24)), int(rng.integers(60))
    return make, model, f"{year}:{month}:{day:02d} {hour:02d}:{minute:02d}:{int(rng.integers(60)):02d}"


def plan(n: int, dups: int, seed: int) -> tuple[list[Spec], list[dict[str, object]]]:
    """The files to write (``n`` originals, then ``dups`` duplicates) and the manifest's pair list."""
    rng = np.random.default_rng([seed, 2**31])
    folders = _folders(rng, max(1, n // 60))
    specs: list[Spec] = []
    for i in range(n):
        folder = folders[int(rng.integers(len(folders)))]
        specs.append(Spec(i, f"{folder}/IMG_{i:05d}.jpg", _exif_for(rng, folder)))
    pairs: list[dict[str, object]] = []
    for k, source in enumerate(rng.choice(n, size=dups, replace=False).tolist()):
        transforms = (TRANSFORMS[k % 4],)
        if k % 3 == 0:
            transforms += (TRANSFORMS[(k + 1 + int(rng.integers(3))) % 4],)
        folder = folders[int(rng.integers(len(folders)))]
        original = specs[source]
        exif = original.exif if rng.random() < 0.7 else None
        dup = Spec(n + k, f"{folder}/DSC_{n + k:05d}.jpg", exif, source, transforms)
        specs.append(dup)
        pairs.append({"original": original.rel, "duplicate": dup.rel, "transforms": list(transforms)})
    return specs, pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="original images (default 20000)")
    parser.add_argument("--dups", type=int, default=500, help="planted near-duplicate pairs (default 500)")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder to write the library to (new or empty)"
    )
    parser.add_argument("--manifest", type=Path, help="manifest JSON (default: <out>.manifest.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=mp.cpu_count() or 1)
    args = parser.parse_args(argv)
    if args.dups > args.n:
        parser.error("--dups must not exceed --n")
    out = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} is not empty")
    manifest = (args.manifest or out.with_name(out.name + ".manifest.json")).resolve()
    if manifest.is_relative_to(out):
        parser.error("the manifest must be written outside the image tree")
    start = time.perf_counter()
    specs, pairs = plan(args.n, args.dups, args.seed)
    tasks = [(args.seed, spec, str(out)) for spec in specs]
    with mp.get_context("spawn").Pool(args.workers) as pool:
        total = sum(pool.imap_unordered(write_one, tasks, chunksize=64))
    seconds = time.perf_counter() - start
    info = {
        "seed": args.seed,
        "originals": args.n,
        "files": len(specs),
        "with_exif": sum(s.exif is not None for s in specs),
        "folders": len({Path(s.rel).parent for s in specs}),
        "bytes": total,
        "seconds": round(seconds, 1),
        "pairs": pairs,
    }
    manifest.write_text(json.dumps(info, indent=1), encoding="utf-8")
    print(f"{len(specs)} files ({total / 1e6:.1f} MB) in {seconds:.1f} s under {out}; manifest {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
