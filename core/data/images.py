"""Reading images: content sniffing, a cheap integrity check, and loading any mode as oriented RGB."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from core.errors import CapsearchError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
SNIFF_BYTES = 16
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"P4", "PPM"),
    (b"P5", "PPM"),
    (b"P6", "PPM"),
)


class ImageLoadError(CapsearchError):
    """An image cannot be decoded (unreadable, truncated, not an image, or a decompression bomb)."""


@dataclass(frozen=True)
class ImageIssue:
    """Why an image failed the integrity check: a problem ``kind`` and a one-line ``reason``."""

    kind: str
    reason: str


def sniff_format(head: bytes) -> str | None:
    """The image format the first bytes of a file announce (``"JPEG"``, ``"PNG"``, ...), or ``None``."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    return None


def looks_like_image(path: Path) -> bool:
    """True when the file has an image extension or image magic bytes (content wins over the name)."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            return sniff_format(fh.read(SNIFF_BYTES)) is not None
    except OSError:
        return False


def _too_many_pixels(size: tuple[int, int]) -> bool:
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and size[0] * size[1] > limit


def check_image_bytes(data: bytes) -> ImageIssue | None:
    """Check that ``data`` is a decodable image without a full decode; ``None`` when it is fine.

    JPEGs are decoded at 1/8 scale (DCT scaling: every byte is still entropy-decoded, so truncation
    shows), other formats fully. Pillow's decompression-bomb guard is reported as a problem.
    """
    if not data:
        return ImageIssue("empty_file", "zero-byte file")
    fmt = sniff_format(data[:SNIFF_BYTES])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if _too_many_pixels(im.size):
                    return ImageIssue(
                        "decompression_bomb",
                        f"{im.size[0]}x{im.size[1]} pixels exceeds the limit of {Image.MAX_IMAGE_PIXELS}",
                    )
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageIssue("decompression_bomb", f"decompression bomb ({exc})")
    except UnidentifiedImageError:
        if fmt is None:
            return ImageIssue("not_an_image", f"not an image (content starts with {data[:8]!r})")
        return ImageIssue("unreadable_image", f"{fmt} header cannot be parsed")
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        if "truncated" in str(exc).lower() or isinstance(exc, EOFError):
            return ImageIssue("truncated_image", f"truncated image data ({exc})")
        return ImageIssue("unreadable_image", f"cannot decode ({exc})")
    return None


def _flatten_alpha(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        return _flatten_alpha(im)
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im, dtype=np.int64)
        if mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr >> 8
        grey = np.clip(arr, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        return Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def load_rgb(path: str | os.PathLike[str], min_side: int | None = None) -> Image.Image:
    """Load an image as RGB, rotated per its EXIF orientation; alpha is composited on white.

    ``min_side``: a JPEG may be decoded at a reduced scale (libjpeg's DCT scaling, 1/2 to 1/8, via
    Pillow's ``draft``) as long as its short side keeps at least ``min_side`` pixels: a 4000x3000 photo
    for a 224-px model decodes at 500x375, several times faster. Other formats decode at full size.
    Raises :class:`ImageLoadError` naming the file and the reason when it cannot be decoded.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _load_rgb(path, min_side=min_side)
    except FileNotFoundError as exc:
        raise ImageLoadError(f"{path}: no such file") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"{path}: decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"{path}: not a readable image") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "cannot decode"
        raise ImageLoadError(f"{path}: {reason} ({exc})") from exc


def load_rgb_bytes(data: bytes, name: str = "upload") -> Image.Image:
    """:func:`load_rgb` of an image held in memory (an upload); ``name`` labels it in errors. The bytes
    pass :func:`check_image_bytes` first, so a decompression bomb is refused before a full decode."""
    issue = check_image_bytes(data)
    if issue is not None:
        raise ImageLoadError(f"{name}: {issue.reason}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _load_rgb(io.BytesIO(data), name)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"{name}: decompression bomb ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageLoadError(f"{name}: cannot decode ({exc})") from exc


def _draft_target(size: tuple[int, int], min_side: int | None) -> tuple[int, int] | None:
    """The reduced size to decode a JPEG of ``size`` at for ``min_side`` (:func:`draft_size`), or None
    where a draft would not pay: no ``min_side``, or a short side under twice it."""
    if min_side is None or min(size) < 2 * min_side:
        return None
    return draft_size(size, min_side)


def draft_size(size: tuple[int, int], min_side: int) -> tuple[int, int]:
    """The size to ask ``Image.draft`` for so that the decoded short side keeps ``min_side`` pixels."""
    short = min(size)
    if short <= min_side:
        return size
    return (-(-size[0] * min_side // short), -(-size[1] * min_side // short))


def _turbo_pixels(im: ImageFile.ImageFile, min_side: int | None) -> np.ndarray | None:
    """A colour or grey JPEG ``im`` (opened, not yet decoded) decoded as RGB ``[h, w, 3]`` by libjpeg-turbo's
    TurboJPEG API (simplejpeg), at a reduced scale as :meth:`Image.draft` would pick for ``min_side``; None
    where it does not apply or fails (the caller then decodes with Pillow, whose errors name the problem).
    Its pixels are Pillow's (the same library and settings; identical on 640 JPEGs made from Flickr8k files:
    colour and grey, baseline and progressive, four orientations, full size and three draft scales) in
    about half the time: Pillow feeds its decoder from Python, block by block."""
    if im.format not in ("JPEG", "MPO") or im.mode not in ("RGB", "L") or im.fp is None:
        return None
    wanted = _draft_target(im.size, min_side) or (0, 0)
    try:
        im.fp.seek(0)
        return simplejpeg.decode_jpeg(im.fp.read(), "RGB", min_width=wanted[0], min_height=wanted[1])
    except (ValueError, OSError):
        return None


def _turbo_decoded(im: ImageFile.ImageFile, min_side: int | None) -> Image.Image | None:
    """:func:`_turbo_pixels` as an upright RGB image (None where it does not apply)."""
    pixels = _turbo_pixels(im, min_side)
    if pixels is None:
        return None
    rgb = Image.fromarray(pixels)
    rgb.info = dict(im.info)  # the EXIF (and XMP) orientation that exif_transpose reads
    ImageOps.exif_transpose(rgb, in_place=True)
    return rgb


def upright_jpeg_pixels(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    """``path``'s RGB pixels ``[h, w, 3]`` when it is a colour or grey JPEG of exactly ``size`` (width,
    height) with no EXIF rotation, decoded straight into an array (no Pillow image: for files already
    stored at a model's input size, as many datasets are, the decode is then most of the work); None for
    any other file, unreadable ones included (:func:`load_rgb` then loads it and names the problem)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.size != size or im.getexif().get(ExifTags.Base.Orientation, 1) != 1:
                    return None
                return _turbo_pixels(im, None)
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ):
        return None


def _load_rgb(path: Path | io.BytesIO, name: str | None = None, min_side: int | None = None) -> Image.Image:
    with Image.open(path) as im:
        if _too_many_pixels(im.size):
            raise ImageLoadError(
                f"{name or path}: {im.size[0]}x{im.size[1]} pixels exceeds the limit of {Image.MAX_IMAGE_PIXELS} "
                "(the same decompression-bomb guard as prepare)"
            )
        turbo = _turbo_decoded(im, min_side)
        if turbo is not None:
            return turbo
        target = _draft_target(im.size, min_side)
        if target is not None and im.format == "JPEG":
            im.draft("RGB", target)
        im.load()
        oriented = ImageOps.exif_transpose(im)
        rgb = _to_rgb(oriented)
        rgb.load()
        return rgb if rgb is not im else rgb.copy()
