"""Search: a query (text, or an image id / path), a direction, ranked results and the selected one in detail.

Results follow typing: each keystroke bumps a generation counter and (re)starts a short debounce; the
search runs in a thread and its results are shown only if no newer query was typed meanwhile. On a photo
library a filter row (dates, folder, camera, min score, order, dedup) narrows the results the same way.
The selected result can be opened in the system viewer, its path copied or its folder opened.
"""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, ListView

from core.errors import CapsearchError
from core.safe_text import markup_safe, shell_quoted, visible
from tui.library_filters import FilterError, SearchFilters, parse_filters
from tui.library_session import LibraryRetriever, default_library_name
from tui.messages import LibraryUpdated
from tui.screens.add_folder import AddFolderDialog
from tui.screens.base import CapsearchScreen
from tui.system_open import open_with_system
from tui.widgets.detail_pane import DetailPane
from tui.widgets.filter_row import FilterRow
from tui.widgets.query_bar import DIRECTIONS, DirectionSwitch, QueryBar, is_image_direction
from tui.widgets.results_list import ResultsList

DEBOUNCE_S = 0.02
TOP_K = 20


class SearchScreen(CapsearchScreen):
    """The start screen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "ctrl+t", "next_direction", "Direction", tooltip="Cycle text→images, image→captions, image→images"
        ),
        Binding(
            "ctrl+r",
            "search_from_selected",
            "Search from this",
            tooltip="The selected image becomes the query",
        ),
        Binding("ctrl+l", "clear_query", "Clear", tooltip="Clear the query and the results"),
        Binding("ctrl+f", "filters", "Filters", tooltip="Show (or hide) the library filters and go to them"),
        Binding("ctrl+s", "view", "View", tooltip="Open the selected result in the system viewer"),
        Binding("ctrl+y", "copy_path", "Copy path", tooltip="Copy the selected result's path (OSC 52)"),
        Binding(
            "ctrl+b", "reveal", "Folder", tooltip="Open the selected result's folder in the system viewer"
        ),
        Binding("ctrl+n", "add_folder", "Add folder", tooltip="Add a folder to the library and index it"),
        Binding("escape", "focus_query", "Query", tooltip="Back to the query input", show=False),
        Binding("down", "focus_results", "Results", tooltip="Move from the query to the results", show=False),
    ]

    @dataclass
    class Done(Message):
        """Results of the search for ``generation``."""

        generation: int
        hits: list[Any]
        truth: Any
        truth_id: str | None
        summary: str
        query_image: tuple[Path, str] | None
        asked: tuple[str, str]
        """(query, direction)."""

    @dataclass
    class Failed(Message):
        """The search for ``generation`` failed; ``explicit``: the user pressed Enter."""

        generation: int
        error: BaseException
        explicit: bool

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0
        self._debounce: Timer | None = None
        self._typed_at = time.perf_counter()
        self.latencies: list[float] = []
        """Seconds from the last change of the query to its results on screen, one per shown result set."""
        self._shown: tuple[str, str] | None = None
        """(query, direction) of the results on screen."""

    def compose_body(self) -> ComposeResult:
        yield QueryBar()
        yield FilterRow(id="filters")
        with Horizontal(id="search-body"):
            yield ResultsList(TOP_K, id="results")
            yield DetailPane(id="detail")

    def on_mount(self) -> None:
        self.watch(self.app, "retriever", self._retriever_changed)
        self.watch(self.app, "activity", self._activity_changed, init=False)
        self.query_one("#query", Input).focus()

    def _activity_changed(self, _activity: str) -> None:
        if self.app.retriever is None:
            self.query_one(ResultsList).show_message(self._waiting_text())

    @property
    def direction(self) -> str:
        return self.query_one(DirectionSwitch).direction

    @property
    def query_text(self) -> str:
        return self.query_one("#query", Input).value.strip()

    def _retriever_changed(self, retriever: Any) -> None:
        self.query_one(FilterRow).display = isinstance(retriever, LibraryRetriever)
        results = self.query_one(ResultsList)
        if retriever is None:
            results.show_message(self._waiting_text())
        elif self.query_text:
            self._schedule(0)
        else:
            results.show_message(
                f"ready: {retriever.size:,} images of {retriever.dataset}/{retriever.split}; "
                f"type a query ({DIRECTIONS[self.direction]})"
            )

    def _waiting_text(self) -> str:
        activity = self.app.activity
        if activity:
            return f"getting ready ({activity}); type away: results appear as soon as the model is loaded"
        return "no model is open: Ctrl+O opens a dataset and a model"

    # -- typing → debounced search ------------------------------------------------------------------
    @on(Input.Changed, "#query")
    def _typed(self) -> None:
        self._schedule(DEBOUNCE_S)

    @on(Input.Submitted, "#query")
    def _submitted(self) -> None:
        self._schedule(0, explicit=True)

    @on(DirectionSwitch.Changed)
    def _direction_changed(self) -> None:
        if self.is_mounted:
            self._schedule(0)

    @on(FilterRow.Changed)
    def _filters_changed(self, event: FilterRow.Changed) -> None:
        retriever = self.app.retriever
        if not isinstance(retriever, LibraryRetriever):
            return
        if self.query_text:
            self._schedule(0 if event.submitted else DEBOUNCE_S, explicit=event.submitted)
            return
        with suppress(FilterError):  # nothing to search yet: only check the fields
            self._filters(retriever)

    def _filters(self, retriever: Any) -> SearchFilters | None:
        """The filter row parsed for a library (None for a dataset); a bad field is shown and raised."""
        if not isinstance(retriever, LibraryRetriever):
            return None
        row = self.query_one(FilterRow)
        try:
            options = parse_filters(row.text, retriever.roots)
        except FilterError as exc:
            row.show_error(exc)
            raise
        row.show_error(None)
        return options

    def _schedule(self, delay: float, explicit: bool = False) -> None:
        """A new query: bump the generation (older results are now stale) and search after ``delay``."""
        self.generation += 1
        self._typed_at = time.perf_counter()
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(delay, lambda: self._start(explicit)) if delay else None
        if not delay:
            self._start(explicit)

    def _start(self, explicit: bool) -> None:
        query, results = self.query_text, self.query_one(ResultsList)
        retriever = self.app.retriever
        if not query:
            results.show_message("type a query to search")
            self.query_one(DetailPane).show(None, None)
        elif retriever is None:
            results.show_message(self._waiting_text())
        else:
            try:
                options = self._filters(retriever)
            except FilterError as exc:
                if explicit:
                    self.app.notify_error(exc, title="Filters")
                return
            self._search(retriever, self.generation, query, self.direction, options, explicit)

    @work(thread=True, group="search")
    def _search(
        self,
        retriever: Any,
        generation: int,
        query: str,
        direction: str,
        options: SearchFilters | None,
        explicit: bool,
    ) -> None:
        with self.app.search_lock:
            if generation != self.generation:  # a newer query was typed while waiting: skip this one
                return
            try:
                message = self._run_search(retriever, generation, query, direction, options)
            except Exception as exc:  # noqa: BLE001 - shown inline or as a notification
                self.post_message(self.Failed(generation, exc, explicit))
                return
        self.post_message(message)

    @staticmethod
    def _run_search(
        retriever: Any, generation: int, query: str, direction: str, options: SearchFilters | None = None
    ) -> Done:
        truth, truth_id, query_image = None, None, None
        extra = {} if options is None else {"filters": options}
        if direction == "text-image":
            hits = retriever.search_text(query, k=TOP_K, **extra)
            truth = retriever.ground_truth(query)
            summary = f"top {len(hits)} images of {retriever.size:,} for “{visible(query)}”"
        else:  # the query is an image id of the split, or an image file path
            if direction == "image-text":
                hits = retriever.image_to_text(query, k=TOP_K)
                truth_id = query  # the query image's own captions are the right answers
                summary = (
                    f"top {len(hits)} captions of {retriever.caption_count:,} for image “{visible(query)}”"
                )
            else:
                hits = retriever.image_to_image(query, k=TOP_K, **extra)
                summary = f"top {len(hits)} images of {retriever.size:,} for image “{visible(query)}”"
            record = next((r for r in retriever.records if r.id == query), None)
            if record is not None:
                first = record.captions[0] if record.captions else "no captions"
                query_image = (retriever.image_path(record), f"{record.id} · {first}")
            else:
                query_image = (Path(query).expanduser(), "an image file outside the dataset")
        if options is not None and options.active:
            summary += f" · {options.describe()}"
        return SearchScreen.Done(generation, hits, truth, truth_id, summary, query_image, (query, direction))

    async def on_search_screen_done(self, message: Done) -> None:
        if message.generation != self.generation:
            return  # stale: a newer query is on its way
        results = self.query_one(ResultsList)
        await results.ensure_rows(len(message.hits))
        if message.generation != self.generation:
            return  # a newer query was typed while the rows were mounted
        truth_id = message.truth_id or (message.truth[0].id if message.truth else None)
        highlighted = results.highlighted if self._shown == message.asked else None
        results.show_hits(
            message.hits,
            message.truth,
            message.summary,
            truth_id=truth_id,
            query_image=message.query_image,
            keep=highlighted.path if highlighted is not None else None,
        )
        self._shown = message.asked
        self._show_detail()
        typed_at = self._typed_at
        self.call_after_refresh(lambda: self.latencies.append(time.perf_counter() - typed_at))

    def on_search_screen_failed(self, message: Failed) -> None:
        if message.generation != self.generation:
            return
        error = message.error
        text = error.message if isinstance(error, CapsearchError) else f"{type(error).__name__}: {error}"
        self.query_one(ResultsList).show_message(f"⚠ {text}")
        if message.explicit or not isinstance(error, CapsearchError):
            self.app.notify_error(error, title="Search failed")

    # -- selection → detail --------------------------------------------------------------------------
    @on(ListView.Highlighted)
    def _highlighted(self) -> None:
        self._show_detail()

    @on(ListView.Selected)
    def _selected(self) -> None:
        self.action_search_from_selected()

    def _show_detail(self) -> None:
        results = self.query_one(ResultsList)
        hit = results.highlighted
        pane = self.query_one(DetailPane)
        if hit is None:
            pane.show(None, None)
            return
        pane.show(
            hit.record,
            hit.path,
            rank=hit.rank,
            score=hit.score,
            caption=hit.caption,
            is_truth=results.truth_id == hit.record.id,
        )

    # -- actions -------------------------------------------------------------------------------------
    def use_image(self, image: str) -> None:
        """Make ``image`` (an id or a path) the query; a text direction becomes image→images."""
        switch = self.query_one(DirectionSwitch)
        if not is_image_direction(switch.direction):
            switch.direction = "image-image"
        self.query_one("#query", Input).value = image
        self._schedule(0)

    def use_text(self, text: str) -> None:
        """Make ``text`` a text→images query."""
        self.query_one(DirectionSwitch).direction = "text-image"
        query = self.query_one("#query", Input)
        query.value = text
        query.focus()
        self._schedule(0)

    def action_search_from_selected(self) -> None:
        hit = self.query_one(ResultsList).highlighted
        if hit is None:
            self.notify("Select a result first (↓ from the query, then ↑/↓).", severity="warning")
            return
        # a library's ids are paths under its folders: the query is the file itself
        self.use_image(str(hit.path) if isinstance(self.app.retriever, LibraryRetriever) else hit.record.id)

    def action_next_direction(self) -> None:
        self.query_one(DirectionSwitch).action_step(1)

    def action_clear_query(self) -> None:
        query = self.query_one("#query", Input)
        query.value = ""
        query.focus()

    def action_focus_query(self) -> None:
        self.query_one("#query", Input).focus()

    def action_focus_results(self) -> None:
        self.query_one(ResultsList).list_view.focus()

    # -- the selected result: view, copy, reveal; adding a folder ------------------------------------
    def _selected_path(self) -> Path | None:
        hit = self.query_one(ResultsList).highlighted
        if hit is None:
            self.notify("Select a result first (↓ from the query, then ↑/↓).", severity="warning")
            return None
        return Path(hit.path)

    def _open(self, path: Path, what: str) -> None:
        try:
            open_with_system(path)
        except CapsearchError as exc:
            self.app.notify_error(exc, title=f"Could not open the {what}")
        else:
            self.notify(markup_safe(path), title=f"Opened the {what}")

    def action_view(self) -> None:
        path = self._selected_path()
        if path is not None:
            self._open(path, "image")

    def action_reveal(self) -> None:
        path = self._selected_path()
        if path is not None:
            self._open(path.parent, "folder")

    def action_copy_path(self) -> None:
        path = self._selected_path()
        if path is not None:
            text = shell_quoted(str(path))  # a clipboard holds text: a name that is not, as bash quoting
            self.app.copy_to_clipboard(text)
            quoted = " (as a shell $'…' string: the name is not plain text)" if text != str(path) else ""
            self.notify(markup_safe(text), title="Copied the path" + quoted)

    def action_filters(self) -> None:
        row = self.query_one(FilterRow)
        if not isinstance(self.app.retriever, LibraryRetriever):
            self.notify("Filters apply to a photo library: Ctrl+N adds a folder to one.", severity="warning")
        elif row.display and self.focused is not None and row in self.focused.ancestors:
            row.display = False
            self.action_focus_query()
        else:
            row.display = True
            row.focus_first()

    def action_add_folder(self) -> None:
        retriever = self.app.retriever
        current = retriever if isinstance(retriever, LibraryRetriever) else None
        name = current.searcher.name if current is not None else default_library_name() or "photos"

        def done(result: LibraryUpdated | None) -> None:
            if result is not None:
                self.app.use_library(result)

        self.app.push_screen(AddFolderDialog(name, current), done)
