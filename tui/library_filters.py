"""The search pane's library filters, typed as text, turned into the core's :class:`Filters` (the same
object ``capsearch search --after/--before/--in/--camera/--min-score/--sort`` builds), collapsing
near-duplicates among the results included (``--dedup``).

Each field is checked on its own, so a bad one is refused with a message naming it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import CapsearchError
from core.library.filters import SORTS, Filters, parse_date
from core.safe_text import visible


@dataclass(frozen=True)
class FilterText:
    """What the filter row holds, as typed ('' for an empty field)."""

    after: str = ""
    before: str = ""
    folder: str = ""
    camera: str = ""
    min_score: str = ""
    sort: str = "score"
    dedup: bool = False


@dataclass(frozen=True)
class SearchFilters:
    """Parsed filters: the core's ``filters`` (near-duplicate collapsing included)."""

    filters: Filters = field(default_factory=Filters)

    @property
    def dedup(self) -> bool:
        return self.filters.dedup

    @property
    def active(self) -> bool:
        f = self.filters
        return self.dedup or f.selective or f.min_score is not None or f.sort != "score"

    def describe(self) -> str:
        """A short summary for the results' header ('' when nothing filters)."""
        f, parts = self.filters, []
        if f.after is not None:
            parts.append(f"from {_day(f.after)}")
        if f.before is not None:
            parts.append(f"before {_day(f.before)}")
        if f.folder is not None:
            parts.append(f"in {visible(Path(f.folder).name)}")
        if f.camera is not None:
            parts.append(f"camera ~ {visible(f.camera)}")
        if f.min_score is not None:
            parts.append(f"score ≥ {f.min_score:g}")
        if f.sort != "score":
            parts.append(f"by {f.sort}")
        if self.dedup:
            parts.append("duplicates collapsed")
        return ", ".join(parts)


def _day(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(when)).removesuffix(" 00:00")


class FilterError(CapsearchError):
    """A filter field holds something it cannot mean; ``field`` names it."""

    def __init__(self, field: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.field = field


def _date(text: str, name: str) -> float | None:
    if not text.strip():
        return None
    try:
        return parse_date(text)
    except CapsearchError as exc:
        raise FilterError(name, f"{name}: {exc.message}", exc.hint) from None


def _score(text: str) -> float | None:
    if not text.strip():
        return None
    hint = "a cosine similarity from -1 to 1, e.g. 0.2"
    try:
        value = float(text)
    except ValueError:
        raise FilterError("min_score", f"min score: {visible(text)!r} is not a number", hint) from None
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        raise FilterError("min_score", f"min score: {visible(text)} is out of range", hint)
    return value


def _folder(text: str, roots: list[Path]) -> str | None:
    """An absolute folder; a relative one is looked for under the library's roots first."""
    if not text.strip():
        return None
    typed = Path(text.strip()).expanduser()
    candidates = [typed] if typed.is_absolute() else [root / typed for root in roots] + [typed]
    for candidate in candidates:
        if candidate.is_dir():
            return str(candidate.resolve())
    raise FilterError(
        "folder",
        f"in: no folder {visible(text.strip())!r}",
        "give a folder of the library, absolute or relative to one of its roots",
    )


def parse_filters(text: FilterText, roots: list[Path]) -> SearchFilters:
    """``text`` as filters (a :class:`FilterError` naming the first bad field); ``roots`` are the open
    library's folders, under which a relative folder is looked for."""
    after, before = _date(text.after, "after"), _date(text.before, "before")
    if after is not None and before is not None and after >= before:
        raise FilterError("before", "before: the date is not after the 'after' date", "widen the range")
    if text.sort not in SORTS:
        raise FilterError("sort", f"sort: {visible(text.sort)!r} is not one of {', '.join(SORTS)}")
    filters = Filters(
        after=after,
        before=before,
        folder=_folder(text.folder, roots),
        camera=text.camera.strip() or None,
        min_score=_score(text.min_score),
        sort=text.sort,
        dedup=text.dedup,
    )
    return SearchFilters(filters)
