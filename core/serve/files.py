"""The collection's image files and their thumbnails, served only from inside the dataset (a library's
files: :meth:`core.serve.library.ServedLibrary.file`).

An id is looked up among the served split's records (it is never a path); the record's file is resolved
(symlinks followed) and served only when it is a regular file inside the dataset's image root. A record
that points elsewhere (``../``, an absolute path, a symlink that leaves the root) is answered like an
unknown id: 404.
"""

from __future__ import annotations

import hashlib
import io
import os
from email.utils import formatdate
from pathlib import Path

from core.data.images import SNIFF_BYTES, load_rgb, sniff_format
from core.search.retriever import Retriever
from core.serve.errors import NotFound

MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "PPM": "image/x-portable-anymap",
    "WEBP": "image/webp",
}
THUMBNAIL_SIZES = (16, 1024)


def image_file(retriever: Retriever, image_id: str) -> Path:
    """The file of image ``image_id`` of the served split, resolved, inside the dataset; else NotFound."""
    missing = NotFound(f"no image with id {image_id!r} in {retriever.dataset}/{retriever.split}")
    record = retriever.record_of(image_id)
    if record is None:
        raise missing
    try:
        root = retriever.data.root.resolve(strict=True)
        path = retriever.image_path(record).resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # gone, a symlink loop
        raise missing from exc
    if not path.is_relative_to(root) or not path.is_file():
        raise missing
    return path


def media_type(path: Path) -> str:
    with open(path, "rb") as fh:
        fmt = sniff_format(fh.read(SNIFF_BYTES))
    return MEDIA_TYPES.get(fmt or "", "application/octet-stream")


def validators(path: Path, variant: str = "") -> tuple[str, str]:
    """A strong ETag (the file's size and modification time, and ``variant``) and its Last-Modified."""
    st = os.stat(path)
    raw = os.fsencode(path) + f"|{st.st_size}|{st.st_mtime_ns}|{variant}".encode()
    return '"' + hashlib.sha256(raw).hexdigest()[:32] + '"', formatdate(st.st_mtime, usegmt=True)


def thumbnail(path: Path, size: int) -> bytes:
    """A JPEG at most ``size`` pixels on its longer side (decoded with the bomb guard of ``prepare``)."""
    image = load_rgb(path)
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()
