"""Disk use of folders under the artifacts root, measured without following symlinks out of it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Descriptions that ``capsearch clean`` itself reads: their access time says nothing about use.
METADATA_FILES = frozenset({"manifest.json", "index.json", "dataset.json", "model.json"})


@dataclass(frozen=True)
class Usage:
    """Bytes and files under a path, and when its newest file was last read or written (epoch s)."""

    bytes: int
    files: int
    last_used: float | None


def _entries(path: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Name and ``lstat`` of ``path`` and, for a real folder, of everything below it (symlinks are not
    followed)."""
    try:
        st = path.lstat()
    except OSError:
        return
    yield path.name, st
    if not path.is_dir() or path.is_symlink():
        return
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in dirnames + filenames:
            try:
                entry = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            yield name, entry


def measure(path: Path) -> Usage:
    """The :class:`Usage` of a file or folder (a symlink counts as itself, not its target). Last use is
    the newest access or change of a data file (only the change of a :data:`METADATA_FILES` file)."""
    total = files = 0
    newest: float | None = None
    for name, st in _entries(path):
        if stat.S_ISDIR(st.st_mode):
            continue
        total += st.st_size
        files += 1
        used = st.st_mtime if name in METADATA_FILES else max(st.st_atime, st.st_mtime)
        newest = used if newest is None else max(newest, used)
    return Usage(total, files, newest)


def real_subdirs(folder: Path) -> list[Path]:
    """The folders directly in ``folder``, by name; symlinks to folders are left out."""
    try:
        with os.scandir(folder) as it:
            found = [Path(e.path) for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    return sorted(found)


def parts(root: Path) -> list[tuple[str, Usage]]:
    """Every top-level entry of ``root`` (datasets, models, embeddings, ...) with its usage, by name."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [(name, measure(root / name)) for name in names]
