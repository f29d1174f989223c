"""Atomic file writes: write to a temporary file beside the target, fsync, then rename over it.

A reader never sees a half-written artifact, and an interrupted run leaves the old file (or none).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ArtifactsWriteError

# errno -> what the user is told; any other OSError is a bug or a damaged disk and propagates as it is.
_CANNOT_WRITE = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
}


def cannot_write(exc: OSError, folder: Path) -> ArtifactsWriteError | None:
    """The user-facing error for a write to ``folder`` that failed with ``exc``, or None if not a write
    problem the user can fix (permissions, a read-only mount, a full disk)."""
    reason = _CANNOT_WRITE.get(exc.errno or -1)
    if reason is None or (exc.filename and not Path(os.fsdecode(exc.filename)).is_relative_to(folder)):
        return None  # not a write problem, or one about another file (a source being read)
    return ArtifactsWriteError(
        f"cannot write to {folder}: {reason}",
        hint="free some space or fix the folder's permissions, "
        "or point CAPSEARCH_ARTIFACTS at a writable folder",
    )


@contextlib.contextmanager
def writing_to(folder: Path) -> Iterator[None]:
    """Turn permission, read-only and disk-full errors inside the block into :class:`ArtifactsWriteError`."""
    try:
        yield
    except OSError as exc:
        error = cannot_write(exc, folder)
        if error is None:
            raise
        raise error from exc


def temp_prefix(name: str) -> str:
    """The prefix of a temporary file or folder made for ``name`` by this process (``.name.pid123.``), so
    that :func:`remove_stale_temps` can tell a dead writer's leftovers from a live writer's work."""
    return f".{name}.pid{os.getpid()}."


_TEMP_PID = re.compile(r"^\..*\.pid(\d+)\.")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale_temp(path: Path) -> bool:
    """True for a temporary file or folder made by :func:`temp_prefix` whose writer no longer runs."""
    match = _TEMP_PID.match(path.name)
    return match is not None and not _running(int(match.group(1)))


_swept: set[Path] = set()


def remove_stale_temps(folder: Path, recursive: bool = True) -> int:
    """Delete the temporary files and folders in ``folder`` (and below, when ``recursive``) whose writer
    no longer runs (a run killed with SIGKILL or by a power loss leaves them); the number removed.
    Nothing else is ever trusted or touched: a live writer's temporaries stay."""
    removed = 0
    found = Path(folder).rglob(".*.pid*") if recursive else Path(folder).glob(".*.pid*")
    for path in sorted(found, reverse=True):
        if not is_stale_temp(path) or not path.exists():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``, on error removed."""
    target = Path(target)
    with writing_to(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent not in _swept:  # once per folder and process: what killed writers left there
            remove_stale_temps(target.parent, recursive=False)
            _swept.add(target.parent)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target.name), suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, target)
        finally:
            tmp_path.unlink(missing_ok=True)


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON (deterministic bytes for the same object)."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(target: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    write_text(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(target: str | os.PathLike[str], row: dict[str, Any]) -> None:
    """Append one line to a JSONL history file (a single small write, flushed and fsynced)."""
    target = Path(target)
    with writing_to(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def save_npy(target: str | os.PathLike[str], array: np.ndarray) -> None:
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def load_npy_checked(path: Path, sha256: str | None) -> np.ndarray | None:
    """The array in ``path`` when its bytes hash to ``sha256``; None when missing, damaged or changed."""
    try:
        if sha256 is None or file_sha256(path) != sha256:
            return None
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (read in 4 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
