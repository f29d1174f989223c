"""Zip archives as dataset sources: never modified, their members extracted once into a cache under the
artifacts root (``cache/archives/<name>-<sha12>/``), keyed by the archive's checksum.

Members whose path escapes the archive root are reported and never written; corrupt members are reported on
every run (their list is kept beside the extracted files).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from core.atomic import file_sha256, write_json
from core.data.captions import normalize_reference
from core.data.folder import SKIP_DIRS
from core.data.validation import ValidationReport
from core.errors import DatasetError
from core.paths import artifacts_root, safe_name
from core.progress import Reporter

_CORRUPT_FILE = ".corrupt-members.json"


def extract_zip(archive: Path, report: ValidationReport, reporter: Reporter) -> Path:
    """The archive's members under a checksum-keyed cache folder (extracted on first use, atomically).

    Members whose path escapes the archive root are reported and never written; corrupt members are
    reported on every run (the list is kept beside the extracted files).
    """
    label = archive.name
    reporter.update(f"checksum {label}", 0, None)
    cache = artifacts_root() / "cache" / "archives" / f"{safe_name(archive.stem)}-{file_sha256(archive)[:12]}"
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{archive} is not a readable zip archive ({exc})") from exc
    with zf:
        members = []
        for info in zf.infolist():
            if info.is_dir():
                continue
            norm = normalize_reference(info.filename)
            if norm is None:
                report.add(
                    label, None, "path_escape", f"member {info.filename!r} escapes the archive; not extracted"
                )
                continue
            if any(p.startswith(".") or p in SKIP_DIRS for p in PurePosixPath(norm).parts):
                continue
            members.append((info, norm))
        if not cache.is_dir():
            _extract_members(zf, members, cache, reporter)
    corrupt_file = cache / _CORRUPT_FILE
    if corrupt_file.is_file():
        for name, reason in json.loads(corrupt_file.read_text(encoding="utf-8")):
            report.add(f"{label}:{name}", None, "unreadable_image", f"corrupt archive member ({reason})")
    return cache


def _extract_members(
    zf: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, str]], cache: Path, reporter: Reporter
) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache.parent))
    corrupt: list[tuple[str, str]] = []
    try:
        for i, (info, norm) in enumerate(members):
            if i % 64 == 0:
                reporter.check_cancelled()
                reporter.update("extract archive", i, len(members))
            target = tmp / norm
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
                target.unlink(missing_ok=True)
                corrupt.append((norm, str(exc)))
        reporter.update("extract archive", len(members), len(members))
        if corrupt:
            write_json(tmp / _CORRUPT_FILE, corrupt)
        try:
            os.replace(tmp, cache)
        except OSError:
            if not cache.is_dir():  # not a concurrent extraction that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
