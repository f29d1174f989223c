"""The worst queries of an evaluation (chosen by :func:`core.evaluation.worst_queries.worst_queries`), each
openable in Search."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import DataTable

if TYPE_CHECKING:  # the core module loads the index stack; the app imports it only once a run is done
    from core.evaluation.worst_queries import WorstQuery


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
            self.add_row(q.direction.label, str(q.rank), q.image_id, q.caption or "(the image is the query)")

    @property
    def selected(self) -> WorstQuery | None:
        return self.queries[self.cursor_row] if 0 <= self.cursor_row < len(self.queries) else None
