"""Finding a library's image files and reading what the catalogue keeps of each.

:func:`walk` lists every image file under the roots with ``os.scandir`` (one ``stat`` each): hidden files
and folders, non-image files and excluded paths are skipped; symlinked folders are not followed (no
loops). :func:`read_file` hashes one file's bytes (sha256: collision-safe, and at ~1 GB/s it costs far less
than decoding the image, which the embedding does anyway) and reads its header: pixel size, EXIF date
taken and camera. :func:`with_fingerprints` adds perceptual hashes and thumbnails (a reduced decode: JPEGs at 1/8 scale or
less), reusing the one of a content already catalogued (a moved or copied file is not decoded again). Anything unreadable becomes a one-line reason, never an exception.
"""

from __future__ import annotations

import calendar
import fnmatch
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from PIL import Image, UnidentifiedImageError

from core.data.images import IMAGE_EXTENSIONS
from core.data.phash import Fingerprint, file_fingerprint
from core.library.catalogue import NewFile
from core.safe_text import visible

_EXIF_IFD = 0x8769
_DATE_ORIGINAL, _DATE_DIGITIZED, _DATE_TIME = 36867, 36868, 306
_MAKE, _MODEL = 271, 272
_TEXT_LIMIT = 64


def heic_available() -> bool:
    """True once ``pillow-heif`` is importable (the ``heic`` extra); it then registers its opener."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def image_extensions() -> frozenset[str]:
    """The extensions scanned: what Pillow opens here, plus ``.heic``/``.heif`` with ``pillow-heif``."""
    return IMAGE_EXTENSIONS | ({".heic", ".heif"} if heic_available() else frozenset())


@dataclass(frozen=True)
class Excludes:
    """Excluded folders (absolute paths) and glob patterns (matched on names and root-relative paths)."""

    folders: tuple[str, ...]
    globs: tuple[str, ...]

    @classmethod
    def of(cls, patterns: list[str]) -> Excludes:
        folders = tuple(p for p in patterns if os.path.isabs(p))
        return cls(folders, tuple(p for p in patterns if not os.path.isabs(p)))

    def skip(self, path: str, name: str, rel: str) -> bool:
        if any(path == f or path.startswith(f.rstrip(os.sep) + os.sep) for f in self.folders):
            return True
        return any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(rel, g) for g in self.globs)


def walk(roots: list[str], excludes: Excludes, extensions: frozenset[str]) -> Iterator[tuple[str, int, int]]:
    """(absolute path, size, mtime_ns) of every image file under ``roots``, each once."""
    seen: set[str] = set()
    for root in roots:
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue  # vanished or unreadable folder: its files count as gone
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                rel = os.path.relpath(entry.path, root)
                if excludes.skip(entry.path, entry.name, rel):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        continue
                    if os.path.splitext(entry.name)[1].lower() not in extensions or entry.path in seen:
                        continue
                    st = entry.stat()
                except OSError:
                    continue
                if entry.is_file():
                    seen.add(entry.path)
                    yield entry.path, st.st_size, st.st_mtime_ns


def _clean(text: object) -> str | None:
    """EXIF text as a short, printable, stripped string (None when empty)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    value = visible(str(text).replace("\x00", "")).strip()[:_TEXT_LIMIT]
    return value or None


def _exif_time(value: object) -> float | None:
    """An EXIF ``YYYY:MM:DD HH:MM:SS`` as seconds since the epoch (the clock time read as UTC)."""
    try:
        parsed = time.strptime(str(value).strip()[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    return float(calendar.timegm(parsed))


def read_header(path: str) -> tuple[int, int, float | None, str | None]:
    """Pixel size, EXIF date taken and camera ("make model") of an image; raises on an unreadable one."""
    with Image.open(path) as im:
        width, height = im.size
        exif = im.getexif()
    sub = exif.get_ifd(_EXIF_IFD)
    taken = next(
        (t for t in (_exif_time(sub.get(_DATE_ORIGINAL)), _exif_time(sub.get(_DATE_DIGITIZED))) if t), None
    )
    if taken is None:
        taken = _exif_time(exif.get(_DATE_TIME))
    make, model = _clean(exif.get(_MAKE) or ""), _clean(exif.get(_MODEL) or "")
    if make and model and model.lower().startswith(make.lower()):
        make = None  # "Canon" + "Canon EOS 5D" -> "Canon EOS 5D"
    camera = " ".join(p for p in (make, model) if p) or None
    return width, height, taken, camera


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_file(path: str, size: int, mtime_ns: int) -> NewFile:
    """A scanned file's catalogue row: hash and header, or the reason it could not be read."""
    try:
        digest = file_sha256(path)
    except OSError as exc:
        return NewFile(path, size, mtime_ns, None, failed=f"cannot read ({exc.strerror or exc})")
    try:
        width, height, taken, camera = read_header(path)
    except UnidentifiedImageError:
        return NewFile(path, size, mtime_ns, digest, failed="not a readable image")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        return NewFile(path, size, mtime_ns, digest, failed=_clean(f"cannot decode ({exc})"))
    return NewFile(path, size, mtime_ns, digest, taken, camera, width, height)


def with_fingerprints(rows: list[NewFile], known: dict[str, Fingerprint]) -> list[NewFile]:
    """``rows`` with their perceptual hashes and thumbnails: ``known`` (by content hash) where the content
    is catalogued, else taken from the file (empty when it cannot be decoded: the embedding will say why)."""
    out = []
    for row in rows:
        if row.failed is not None or row.hash is None:
            out.append(row)
            continue
        found = known.get(row.hash) or file_fingerprint(row.path)
        out.append(replace(row, phash=found.phash if found else "", thumb=found.thumb if found else b""))
    return out
