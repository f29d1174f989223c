"""Browse: a prepared dataset's split, a page at a time, filtered by a caption substring; jump to an id.
With a photo library open, its files (by path, with their date and camera) instead."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, Select
from textual.widgets.data_table import ColumnKey

from core.data.records import SPLITS
from core.safe_text import markup_safe
from tui.library_session import LibraryFiles, LibraryRetriever
from tui.messages import SplitLoaded, Task, TaskFailed, UseImageQuery
from tui.screens.base import CapsearchScreen
from tui.widgets.detail_pane import DetailPane
from tui.workers import run_task

PAGE_SIZE = 50
ID_WIDTH, PATH_WIDTH = 22, 30  # a library file is named by its path under a root
LIBRARY_NOTE = "date · camera"  # what a library file shows in place of captions


def filter_records(records: list[Any], needle: str) -> list[Any]:
    """Records with a caption (or an id) containing ``needle``, case-insensitively."""
    needle = needle.strip().lower()
    if not needle:
        return records
    return [r for r in records if needle in r.id.lower() or any(needle in c.lower() for c in r.captions)]


class BrowseScreen(CapsearchScreen):
    """A page of a split's images, filtered by caption; the selected one in detail."""

    AUTO_FOCUS = "#browse-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+f", "focus('#browse-filter')", "Filter", tooltip="Filter by a caption substring"),
        Binding("ctrl+g", "focus('#browse-jump')", "Go to id", tooltip="Jump to an image id"),
        Binding("ctrl+t", "next_split", "Split", tooltip="Cycle train, val and test"),
        Binding("ctrl+n", "page(1)", "Next page", tooltip="Next page"),
        Binding("ctrl+b", "page(-1)", "Prev page", tooltip="Previous page"),
        Binding("ctrl+r", "open_in_search", "Search from this", tooltip="Open the selected image in Search"),
        Binding("escape", "focus('#browse-table')", "List", tooltip="Back to the list", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.records: list[Any] = []
        self.shown: list[Any] = []
        self.page = 0
        self._dataset: Any = None
        self.splits: list[str] = list(SPLITS)

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="browse-controls", classes="controls"):
            yield Select(
                [(s, s) for s in SPLITS], value="test", allow_blank=False, compact=True, id="browse-split"
            )
            yield Input(placeholder="filter: caption contains…", classes="compact", id="browse-filter")
            yield Input(placeholder="go to id…", classes="compact", id="browse-jump")
            yield Button("◀ prev", id="browse-prev", compact=True, action="screen.page(-1)")
            yield Label("", id="browse-page")
            yield Button("next ▶", id="browse-next", compact=True, action="screen.page(1)")
        with Horizontal(id="browse-body"):
            with Vertical(id="browse-left"):
                table: DataTable[str] = DataTable(id="browse-table", cursor_type="row", zebra_stripes=True)
                table.add_column("#", key="n", width=5)
                table.add_column("id", key="id", width=ID_WIDTH)
                table.add_column("captions", key="captions")
                yield table
            yield DetailPane(id="browse-detail")

    def on_mount(self) -> None:
        self.watch(self.app, "dataset", self._dataset_changed)
        self.watch(self.app, "retriever", self._retriever_changed)

    def _retriever_changed(self, retriever: Any) -> None:
        if isinstance(retriever, LibraryRetriever):
            self._dataset_changed(retriever.browse_view())

    def _name_columns(self, library: bool) -> None:
        """A dataset lists image ids and captions; a library its files' paths and their date and camera."""
        table = self.query_one("#browse-table", DataTable)
        for key, label in (
            ("id", "path" if library else "id"),
            ("captions", LIBRARY_NOTE if library else "captions"),
        ):
            table.columns[ColumnKey(key)].label = Text(label)
        # the width applies as the page's rows are added (_render_page)
        table.columns[ColumnKey("id")].width = PATH_WIDTH if library else ID_WIDTH
        what = f"{LIBRARY_NOTE} or path" if library else "caption"
        self.query_one("#browse-filter", Input).placeholder = f"filter: {what} contains…"
        self.query_one("#browse-jump", Input).placeholder = "go to path…" if library else "go to id…"

    def _dataset_changed(self, dataset: Any) -> None:
        if dataset is None and isinstance(self.app.retriever, LibraryRetriever):
            return  # a library is open: its files are shown
        self._name_columns(isinstance(self.app.retriever, LibraryRetriever))
        if dataset is None:
            self.query_one("#browse-page", Label).update("no dataset open yet (Ctrl+O opens one)")
            return
        self._dataset = dataset
        split_select = self.query_one("#browse-split", Select)
        splits = dataset.splits or list(SPLITS)
        current = self.app.source.split if self.app.source.split in splits else splits[-1]
        self.splits = list(splits)
        split_select.set_options([(s, s) for s in splits])
        split_select.value = current
        self._load(dataset, current)

    @on(Select.Changed, "#browse-split")
    def _split_changed(self, event: Select.Changed) -> None:
        if self._dataset is not None and event.value != Select.NULL:
            self._load(self._dataset, str(event.value))

    @work(thread=True, exclusive=True, group="browse-load")
    def _load(self, dataset: Any, split: str) -> None:
        run_task(self, Task.BROWSE, lambda: SplitLoaded(dataset, split, dataset.split(split)))

    def on_task_failed(self, message: TaskFailed) -> None:
        if message.task == Task.BROWSE:
            self.app.notify_error(message.error, title="Cannot read the split")

    def on_split_loaded(self, message: SplitLoaded) -> None:
        self.records = message.records
        self._apply_filter()

    @on(Input.Changed, "#browse-filter")
    def _apply_filter(self) -> None:
        self.shown = filter_records(self.records, self.query_one("#browse-filter", Input).value)
        self.page = 0
        self._render_page()

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.shown) // PAGE_SIZE))

    def _render_page(self, cursor: int = 0) -> None:
        table = self.query_one("#browse-table", DataTable)
        table.clear()
        start = self.page * PAGE_SIZE
        room = max(16, table.size.width - 5 - table.columns[ColumnKey("id")].width - 8)  # what is left
        for i, record in enumerate(self.shown[start : start + PAGE_SIZE], start + 1):
            first = record.captions[0] if record.captions else "(no captions)"
            more = f" (+{len(record.captions) - 1})" if len(record.captions) > 1 else ""
            if len(first) + len(more) > room:
                first = first[: max(1, room - len(more) - 1)] + "…"
            table.add_row(str(i), markup_safe(record.id), markup_safe(first) + more, key=record.id)
        filtered = f" of {len(self.records):,}" if len(self.shown) != len(self.records) else ""
        self.query_one("#browse-page", Label).update(
            f"page {self.page + 1}/{self.pages} · {len(self.shown):,}{filtered} images"
        )
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1))
        self._show_selected()

    def on_resize(self) -> None:
        if self.shown:
            self.call_after_refresh(self._render_page, self.query_one("#browse-table", DataTable).cursor_row)

    def _selected(self) -> Any:
        table = self.query_one("#browse-table", DataTable)
        index = self.page * PAGE_SIZE + table.cursor_row
        return self.shown[index] if table.row_count and 0 <= index < len(self.shown) else None

    def _show_selected(self) -> None:
        record = self._selected()
        pane = self.query_one(DetailPane)
        if record is None or self._dataset is None:
            pane.show(None, None)
        else:
            pane.show(record, self._dataset.image_path(record))

    @on(DataTable.RowHighlighted, "#browse-table")
    def _row_highlighted(self) -> None:
        self._show_selected()

    @on(DataTable.RowSelected, "#browse-table")
    def _row_selected(self) -> None:
        self.action_open_in_search()

    @on(Input.Submitted, "#browse-jump")
    def _jump(self, event: Input.Submitted) -> None:
        wanted = event.value.strip()
        if not wanted:
            return
        ids = [r.id for r in self.shown]
        index = (
            ids.index(wanted)
            if wanted in ids
            else next((i for i, v in enumerate(ids) if v.startswith(wanted)), -1)
        )
        if index < 0:
            where = "this filter" if len(self.shown) != len(self.records) else "this split"
            self.notify(
                f"No image id starting with {markup_safe(repr(wanted))} in {where}.", severity="warning"
            )
            return
        self.page = index // PAGE_SIZE
        self._render_page(cursor=index % PAGE_SIZE)
        self.query_one("#browse-table", DataTable).focus()

    def action_page(self, delta: int) -> None:
        page = min(max(self.page + delta, 0), self.pages - 1)
        if page != self.page:
            self.page = page
            self._render_page()

    def action_next_split(self) -> None:
        select = self.query_one("#browse-split", Select)
        current = str(select.value)
        if current in self.splits:
            select.value = self.splits[(self.splits.index(current) + 1) % len(self.splits)]

    def action_open_in_search(self) -> None:
        record = self._selected()
        if record is None:
            self.notify("Nothing selected.", severity="warning")
            return
        if isinstance(self._dataset, LibraryFiles):
            image = record.image  # the file itself
        elif self._dataset is not None and self.app.retriever is not None:
            same = self.app.retriever.split == str(self.query_one("#browse-split", Select).value)
            image = record.id if same else str(self._dataset.image_path(record))
        else:
            image = record.id
        self.post_message(UseImageQuery(image))
