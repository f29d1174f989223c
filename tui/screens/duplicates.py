"""Duplicates: groups of near-identical images of the open split or library, a group at a time with previews.

The groups come from :func:`core.search.duplicates.dataset_duplicates` over the split the app searches
(the open model's cached image embeddings and the images' perceptual hashes; every two members of a group
near-duplicates under the default rule at the threshold entered), or for a library from
:func:`core.library.duplicates.library_duplicates` (its stored vectors and catalogued hashes), computed in a
thread worker.
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label

from core.near_duplicates import DEFAULT_THRESHOLD
from core.safe_text import markup_safe
from tui.library_session import LibraryRetriever
from tui.messages import DuplicatesFound, Task, TaskFailed, TaskProgress
from tui.screens.base import CapsearchScreen
from tui.widgets.image_preview import ImagePreview
from tui.workers import TuiReporter, run_task

PREVIEWS = 6


def compute_duplicates(retriever: Any, threshold: float, reporter: TuiReporter) -> Any:
    """The near-duplicate groups of the retriever's split by its model, or of the open library's photos."""
    if isinstance(retriever, LibraryRetriever):
        return retriever.duplicates(threshold, reporter)
    from core.search.duplicates import dataset_duplicates

    return dataset_duplicates(retriever.lm, retriever.data, [retriever.split], threshold, reporter)


def _what(retriever: Any) -> str:
    """What the groups are looked for in: a library, or a dataset's split."""
    if isinstance(retriever, LibraryRetriever):
        return markup_safe(retriever.dataset)
    return f"{markup_safe(retriever.data.name)}/{retriever.split}"


class DuplicatesScreen(CapsearchScreen):
    """A list of near-duplicate groups on the left; the selected group's images side by side."""

    AUTO_FOCUS = "#dup-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "group(1)", "Next group", tooltip="Show the next group"),
        Binding("ctrl+b", "group(-1)", "Prev group", tooltip="Show the previous group"),
        Binding("ctrl+f", "focus('#dup-threshold')", "Threshold", tooltip="Change the similarity threshold"),
        Binding("ctrl+r", "find", "Find again", tooltip="Group the current dataset's images again"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.found: Any = None
        self._for: Any = None

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="dup-controls", classes="controls"):
            yield Label("threshold")
            yield Input(str(DEFAULT_THRESHOLD), classes="compact", id="dup-threshold")
            yield Button("find", id="dup-find", compact=True, action="screen.find")
            yield Label("", id="dup-status")
        with Horizontal(id="dup-body"):
            with Vertical(id="dup-left"):
                table: DataTable[str] = DataTable(id="dup-table", cursor_type="row", zebra_stripes=True)
                table.add_column("#", key="n", width=5)
                table.add_column("images", key="images", width=7)
                table.add_column("similarity", key="sim", width=12)
                table.add_column("first", key="first")
                yield table
            with Grid(id="dup-grid"):
                for k in range(PREVIEWS):
                    with Vertical(classes="dup-cell"):
                        yield ImagePreview(id=f"dup-preview-{k}")
                        yield Label("", id=f"dup-label-{k}")

    def on_mount(self) -> None:
        self.watch(self.app, "retriever", self._retriever_changed)

    def _retriever_changed(self, retriever: Any) -> None:
        if retriever is None:
            self._status("no dataset open yet (Ctrl+O opens one)")
        elif retriever is not self._for and self.is_current:
            self.action_find()

    def on_screen_resume(self) -> None:
        if self.app.retriever is not None and self.app.retriever is not self._for:
            self.action_find()

    def _status(self, text: str) -> None:
        self.query_one("#dup-status", Label).update(text)

    def _threshold(self) -> float | None:
        text = self.query_one("#dup-threshold", Input).value.strip()
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0.0 < value <= 1.0:
            self.notify(f"{markup_safe(repr(text))} is not a similarity in (0, 1].", severity="warning")
            return None
        return value

    @on(Input.Submitted, "#dup-threshold")
    def action_find(self) -> None:
        retriever, threshold = self.app.retriever, self._threshold()
        if retriever is None or threshold is None:
            return
        self._for = retriever
        self._status(f"grouping {_what(retriever)} at {threshold:g}…")
        self._find(retriever, threshold, TuiReporter(self, Task.DUPLICATES))

    @work(thread=True, exclusive=True, group="duplicates")
    def _find(self, retriever: Any, threshold: float, reporter: TuiReporter) -> None:
        run_task(
            self, Task.DUPLICATES, lambda: DuplicatesFound(compute_duplicates(retriever, threshold, reporter))
        )

    def on_task_progress(self, message: TaskProgress) -> None:
        if message.task == Task.DUPLICATES and message.total:
            self._status(f"{message.stage}: {message.done:,}/{message.total:,}")

    def on_task_failed(self, message: TaskFailed) -> None:
        if message.task == Task.DUPLICATES:
            self._status("")
            self.app.notify_error(message.error, title="Cannot group near-duplicates")

    def on_duplicates_found(self, message: DuplicatesFound) -> None:
        self.found = message.found
        table = self.query_one("#dup-table", DataTable)
        table.clear()
        for n, group in enumerate(self.found.groups, 1):
            span = f"{group.min_similarity:.3f}–{group.max_similarity:.3f}"
            table.add_row(
                str(n), str(len(group.ids)), span, markup_safe(self.found.label(group.ids[0])), key=str(n)
            )
        self._show_group()

    @property
    def group_index(self) -> int:
        return self.query_one("#dup-table", DataTable).cursor_row

    def _show_group(self) -> None:
        found = self.found
        groups = found.groups if found is not None else []
        index = self.group_index if groups else -1
        members = groups[index].ids if groups else []
        for k in range(PREVIEWS):
            image_id = members[k] if k < len(members) else None
            self.query_one(f"#dup-preview-{k}", ImagePreview).show(found.path(image_id) if image_id else None)
            label = markup_safe(found.label(image_id)) if image_id else ""
            if k == PREVIEWS - 1 and len(members) > PREVIEWS:
                label += f" (+{len(members) - PREVIEWS} more)"
            self.query_one(f"#dup-label-{k}", Label).update(label)
        if found is not None:
            where = f"group {index + 1}/{len(groups):,} · " if groups else "no groups · "
            self._status(f"{where}{found.images:,} images at {found.threshold:g}")

    @on(DataTable.RowHighlighted, "#dup-table")
    def _row_highlighted(self) -> None:
        self._show_group()

    def action_group(self, delta: int) -> None:
        table = self.query_one("#dup-table", DataTable)
        if table.row_count:
            table.move_cursor(row=min(max(table.cursor_row + delta, 0), table.row_count - 1))
