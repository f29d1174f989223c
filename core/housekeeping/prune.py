"""Delete stale artifacts, never anything outside the artifacts root and never through a symlink."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from core.housekeeping.inventory import Artifact


@dataclass
class PruneResult:
    """What was deleted (bytes freed) and what was refused, with why."""

    removed: list[Artifact] = field(default_factory=list)
    refused: list[tuple[Artifact, str]] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(item.usage.bytes for item in self.removed)


def inside(path: Path, root: Path) -> bool:
    """True when ``path`` itself (its folder resolved, the last part not followed) lies under ``root``."""
    real_root = root.resolve()
    where = Path(os.path.realpath(path.parent)) / path.name
    return where != real_root and where.is_relative_to(real_root)


def _remove_empty_parents(path: Path, root: Path) -> None:
    """Drop the folders a removal left empty, up to (not including) the root's top-level folders."""
    parent = path.parent
    while parent.parent != root and inside(parent, root):
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent


def remove(item: Artifact, root: Path) -> str | None:
    """Delete one artifact; the reason it was refused, or None."""
    path = item.path
    if not inside(path, root):
        return "outside the artifacts root"
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)  # a link is removed, never its target
        else:
            shutil.rmtree(path)  # does not follow symlinks inside
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    _remove_empty_parents(path, root)
    return None


def prune(items: list[Artifact], root: Path) -> PruneResult:
    """Delete every prunable item of ``items`` (deepest first) under ``root``."""
    result = PruneResult()
    for item in sorted((i for i in items if i.prunable), key=lambda i: -len(i.path.parts)):
        reason = remove(item, root)
        if reason is None:
            result.removed.append(item)
        else:
            result.refused.append((item, reason))
    return result
