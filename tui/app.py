"""CapsearchApp: the terminal app. The core (torch, open_clip, faiss) is imported only inside workers,
so the first paint never waits for it; the model opens in a thread while the UI is already usable."""

from __future__ import annotations

import threading
import traceback
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.notifications import SeverityLevel
from textual.reactive import reactive
from textual.screen import Screen

from core.embed.heap import share_one_arena
from core.errors import Cancelled, CapsearchError
from core.progress import Reporter
from core.safe_text import markup_safe
from tui.library_session import LibraryRetriever
from tui.messages import (
    DatasetOpened,
    LibraryChanged,
    LibraryUpdated,
    SourceOpened,
    Task,
    TaskFailed,
    TaskLog,
    TaskProgress,
    UseImageQuery,
    UseTextQuery,
)
from tui.screens.help import HelpScreen
from tui.screens.open_dialog import OpenDialog
from tui.screens.registry import SCREENS
from tui.screens.search import SearchScreen
from tui.session import Source, open_retriever, resolve
from tui.workers import TuiReporter, run_task

LIBRARY_CHECK_S = 3.0
"""How often an open library is checked for changes made by other processes."""


def describe_error(error: BaseException) -> tuple[str, SeverityLevel]:
    """Notification text and severity for a failure: what happened, then the next step."""
    if isinstance(error, Cancelled):
        return "Cancelled; finished work was kept.", "warning"
    if isinstance(error, CapsearchError):
        text = error.message
        if error.hint:
            text += f"\nNext: {error.hint}"
        return text, "error"
    return (
        f"Unexpected {type(error).__name__}: {error}\nNext: this is a bug in capsearch; please report "
        "it with what you did (the traceback is in the Textual devtools log).",
        "error",
    )


def describe_progress(message: TaskProgress) -> str:
    """``stage done/total`` plus the loss or the recall when the core reports them."""
    text = message.stage + (f" {message.done}/{message.total}" if message.total else "")
    for key in ("loss", "mean_recall"):
        value = message.info.get(key)
        if isinstance(value, int | float):
            text += f" · {key.replace('_', ' ')} {value:.3g}"
    return text


class CapsearchApp(App[None]):
    """Search, browse, evaluate and fine-tune; one mode (screen stack) per top-level screen."""

    TITLE = "capsearch"
    CSS_PATH = Path(__file__).with_name("app.tcss")
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {spec.name: spec.screen for spec in SCREENS}
    DEFAULT_MODE = SCREENS[0].name
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    BINDINGS: ClassVar[list[BindingType]] = [
        # Shown in the top bar rather than the footer.
        Binding("f1", "help", "Help", tooltip="List every key, per screen", show=False),
        *(
            Binding(spec.key, f"switch_mode('{spec.name}')", spec.title, tooltip=spec.tooltip, show=False)
            for spec in SCREENS
        ),
        Binding(
            "ctrl+o", "open_source", "Open", tooltip="Open another dataset, model, split or index", show=False
        ),
    ]

    retriever: reactive[Any] = reactive(None, always_update=True)
    """The open core Retriever (None while loading or after a failure)."""
    dataset: reactive[Any] = reactive(None, always_update=True)
    """The active PreparedDataset (known before the model finishes loading)."""
    activity: reactive[str] = reactive("")
    """What is loading right now, for the status bar ('' when idle)."""
    models_version: reactive[int] = reactive(0)
    """Bumped when a new model appears (a fine-tune finished): model lists reload."""

    def __init__(self, source: Source | None = None, retriever: Any = None) -> None:
        """Open ``source`` (default: the built-in demo); tests may inject an open ``retriever`` instead."""
        super().__init__()
        share_one_arena()  # the workers encode and train in threads: let them reuse freed memory too
        self.source = source or Source()
        self.search_lock = threading.Lock()
        self.reporters: weakref.WeakSet[Reporter] = weakref.WeakSet()
        """Reporters of core work in progress; cancelled on exit so that worker threads end promptly."""
        self._injected = retriever
        self._following = False

    def on_mount(self) -> None:
        if self._injected is not None:
            self.dataset = self._injected.data
            self.retriever = self._injected
        else:  # after the first paint: the core's imports would compete with it for the interpreter
            self.call_after_refresh(self.open_source, self.source)
        self.set_interval(LIBRARY_CHECK_S, self._check_library)

    # -- following a library that another process updates --------------------------------------------
    def _check_library(self) -> None:
        retriever = self.retriever
        if isinstance(retriever, LibraryRetriever) and not self._following:
            self._following = True
            self._follow_library(retriever)

    @work(thread=True, exclusive=True, group="follow")
    def _follow_library(self, retriever: LibraryRetriever) -> None:
        """When the catalogue moved on (``library update`` or ``--watch`` elsewhere), catch the library up in
        place, or open it again after a model change or past the exact/HNSW crossover; a failure is logged
        and tried again at the next check."""
        try:
            with self.search_lock:  # the searches use the same catalogue connection and index
                if not retriever.changed():
                    return
                caught_up = retriever.catch_up()
            self.post_message(
                LibraryChanged(retriever, retriever if caught_up else retriever.reopen(Reporter()))
            )
        except Exception as exc:  # noqa: BLE001 - the open library keeps serving searches
            self.log.warning(f"following the library failed: {exc}")
        finally:
            self._following = False

    def on_library_changed(self, message: LibraryChanged) -> None:
        """Search the library as it is now (the current query runs again, keeping its highlighted hit); close
        the retriever nothing searches any more."""
        if self.retriever is message.old:
            self.retriever = message.retriever
            stale = message.old
        else:  # another library or source was opened meanwhile
            stale = message.retriever
        if stale is not self.retriever and stale is not self._injected:  # an injected one is a test's
            self._close_retriever(stale)

    @work(thread=True, group="follow-close")
    def _close_retriever(self, retriever: LibraryRetriever) -> None:
        with self.search_lock:  # after any search still running on it
            retriever.close()

    # -- opening a dataset + model -------------------------------------------------------------------
    def open_source(self, source: Source) -> None:
        """Open ``source`` in a worker; the current one stays in use until the new one is ready."""
        self.activity = f"opening {source.describe()}"
        self._open(source, TuiReporter(self, Task.OPEN))

    def exit(self, *args: Any, **kwargs: Any) -> None:
        """Quit; long core work (training, embedding) is cancelled so its thread ends at the next safe point."""
        for reporter in list(self.reporters):
            reporter.cancel()
        super().exit(*args, **kwargs)

    @work(thread=True, exclusive=True, group="open")
    def _open(self, source: Source, reporter: TuiReporter) -> None:
        def call() -> SourceOpened:
            from core.data.records import load_dataset

            if source.library is not None:
                from tui.library_session import open_library

                return SourceOpened(source, open_library(source.library, reporter))

            dataset, _ = resolve(source, reporter)
            self.post_message(DatasetOpened(load_dataset(dataset)))
            return SourceOpened(source, open_retriever(source, reporter))

        run_task(self, Task.OPEN, call)

    def on_task_progress(self, message: TaskProgress) -> None:
        if message.task == Task.OPEN:
            self.activity = describe_progress(message)

    def on_dataset_opened(self, message: DatasetOpened) -> None:
        self.dataset = message.dataset

    def on_task_log(self, message: TaskLog) -> None:
        if message.task == Task.OPEN:
            self.log.info(message.text)

    def on_source_opened(self, message: SourceOpened) -> None:
        self.activity = ""
        self.source, self.retriever = message.source, message.retriever
        self.dataset = self.retriever.data

    def use_library(self, updated: LibraryUpdated) -> None:
        """Search the library an update just finished (results refresh); nothing when none is embedded."""
        if updated.retriever is not None:
            self.source = Source(split=self.source.split, library=updated.name)
            self.retriever = updated.retriever
            self.dataset = None

    def on_task_failed(self, message: TaskFailed) -> None:
        if message.task == Task.OPEN:
            self.activity = ""
            if self.retriever is not None:  # back to what is still open
                self.dataset = self.retriever.data
            self.notify_error(message.error, title="Could not open the dataset and model")

    def notify_error(self, error: BaseException, title: str = "") -> None:
        """Show a core error as a notification naming the next step (never a traceback)."""
        text, severity = describe_error(error)
        if not isinstance(error, CapsearchError):
            self.log.error("".join(traceback.format_exception(error)))
        self.notify(markup_safe(text), title=title, severity=severity, timeout=12)

    # -- navigation ----------------------------------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_open_source(self) -> None:
        def chosen(source: Source | None) -> None:
            if source is not None:
                self.open_source(source)

        self.push_screen(OpenDialog(self.source), chosen)

    async def on_use_image_query(self, message: UseImageQuery) -> None:
        await self.switch_mode("search")
        screen = self.screen
        if isinstance(screen, SearchScreen):
            screen.use_image(str(message.image) if isinstance(message.image, Path) else message.image)

    async def on_use_text_query(self, message: UseTextQuery) -> None:
        await self.switch_mode("search")
        screen = self.screen
        if isinstance(screen, SearchScreen):
            screen.use_text(message.text)

    def model_added(self, model_dir: Path, finished: bool = True) -> None:
        """A fine-tune wrote ``model_dir``: every model list reloads and the user is told how to use it."""
        self.models_version += 1
        what = "is ready" if finished else "keeps the best weights so far"
        self.notify(
            f"Model {model_dir.name} {what}.\nNext: Ctrl+O to search with it, or pick it in Evaluate.",
            title="New model",
            timeout=12,
        )

    # -- command palette -----------------------------------------------------------------------------
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Every key-bound action of the app and of the current screen, plus Textual's own."""
        yield from super().get_system_commands(screen)
        seen: set[str] = set()
        for node in (screen, self):
            for item in type(node).BINDINGS:
                b = item if isinstance(item, Binding) else Binding(*item)
                if not b.description or b.action in seen:
                    continue
                seen.add(b.action)
                help_text = f"{b.tooltip or b.description} · key {self.get_key_display(b)}"
                yield SystemCommand(b.description, help_text, partial(self.run_action, b.action, node))
