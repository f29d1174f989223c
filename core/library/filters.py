"""Search filters over a library's catalogue: date taken (EXIF, else mtime), folder and camera.

:meth:`Filters.allowed_ids` turns them into the file ids a search may return; the index then searches
among those ids only (a FAISS ``IDSelector``), so ``k`` results come back whenever ``k`` match.
"""

from __future__ import annotations

import calendar
import os
import time
from dataclasses import dataclass

import numpy as np

from core.library.catalogue import PATH_PARAM, Catalogue, db_text
from core.library.home import LibraryError

SORTS = ("score", "date")


def parse_date(text: str) -> float:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS]`` (read as UTC, like EXIF clock times) in epoch seconds."""
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return float(calendar.timegm(time.strptime(text.strip(), fmt)))
        except ValueError:
            continue
    raise LibraryError(f"not a date: {text!r}", hint="write dates as YYYY-MM-DD or YYYY-MM-DDTHH:MM")


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class Filters:
    """Which files a search may return and how hits are ordered; ``after`` inclusive, ``before``
    exclusive (epoch seconds); ``folder`` an absolute folder; ``camera`` a case-insensitive substring;
    ``dedup``: near-duplicates among the hits collapsed to their best-scored photo."""

    after: float | None = None
    before: float | None = None
    folder: str | None = None
    camera: str | None = None
    min_score: float | None = None
    sort: str = "score"
    dedup: bool = False

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise LibraryError(f"unknown sort {self.sort!r}", hint=f"use one of {', '.join(SORTS)}")

    @property
    def selective(self) -> bool:
        """Whether the filters restrict which files may be returned (score cut-offs aside)."""
        return any(v is not None for v in (self.after, self.before, self.folder, self.camera))

    def allowed_ids(self, catalogue: Catalogue) -> np.ndarray | None:
        """The ids of the readable files that pass; None when nothing is filtered."""
        if not self.selective:
            return None
        where: list[str] = ["failed IS NULL"]
        args: list[float | int | str | bytes] = []
        when = "COALESCE(taken, mtime_ns / 1e9)"
        if self.after is not None:
            where.append(f"{when} >= ?")
            args.append(self.after)
        if self.before is not None:
            where.append(f"{when} < ?")
            args.append(self.before)
        if self.folder is not None:
            prefix = db_text(self.folder.rstrip(os.sep) + os.sep)
            where.append(f"substr(path, 1, length({PATH_PARAM})) = {PATH_PARAM}")  # ends at a separator
            args += [prefix, prefix]
        if self.camera is not None:
            where.append("camera LIKE ? ESCAPE '\\'")
            args.append(f"%{_like(self.camera)}%")
        rows = catalogue.db.execute(f"SELECT id FROM files WHERE {' AND '.join(where)}", args)
        return np.array([r[0] for r in rows], np.int64)
