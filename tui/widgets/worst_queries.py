"""The worst queries of an evaluation: those whose correct item ranked lowest, each openable in Search."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from textual.widgets import DataTable

TEXT_TO_IMAGE = "text → image"
IMAGE_TO_TEXT = "image → text"


class WorstQuery(NamedTuple):
    direction: str
    rank: int
    image_id: str
    path: Path
    caption: str
    """The query caption ('' for an image query)."""


def worst_queries(
    payload: dict[str, Any], records: list[Any], image_path: Callable[[Any], Path], per_direction: int
) -> list[WorstQuery]:
    """``per_direction`` worst queries of each direction of a ``run_eval`` result, worst first.

    Caption row ``j`` is caption ``n`` of image ``caption_image[j]``, counted in order, as the core lays
    them out; image queries are the split's records in order (rank 0: no captions, not a query).
    """
    ranks = payload["per_query"][payload["primary"]]
    seen: dict[int, int] = {}
    text_rows = []
    for j, (row, rank) in enumerate(zip(payload["caption_image"], ranks["text_to_image"], strict=True)):
        n = seen.get(row, 0)
        seen[row] = n + 1
        record = records[row]
        caption = record.captions[n] if n < len(record.captions) else f"caption {j}"
        text_rows.append(WorstQuery(TEXT_TO_IMAGE, int(rank), record.id, image_path(record), caption))
    image_rows = [
        WorstQuery(IMAGE_TO_TEXT, int(rank), records[i].id, image_path(records[i]), "")
        for i, rank in enumerate(ranks["image_to_text"])
        if rank > 0
    ]
    worst: list[WorstQuery] = []
    for rows in (text_rows, image_rows):
        rows.sort(key=lambda r: -r.rank)
        worst += rows[:per_direction]
    return worst


class WorstQueriesTable(DataTable[str]):
    """One row per worst query; Enter (or Ctrl+R on the screen) opens the selected one in Search."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.queries: list[WorstQuery] = []

    def on_mount(self) -> None:
        self.add_columns("direction", "rank", "image", "query caption")

    def show(self, queries: list[WorstQuery]) -> None:
        self.queries = queries
        self.clear()
        for q in queries:
            self.add_row(q.direction, str(q.rank), q.image_id, q.caption or "(the image is the query)")

    @property
    def selected(self) -> WorstQuery | None:
        return self.queries[self.cursor_row] if 0 <= self.cursor_row < len(self.queries) else None
