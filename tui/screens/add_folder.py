"""The Add folder dialog (Ctrl+N in Search): a folder of photos and the library to add it to, then the
library's update with its progress (scan, hash, embed) until it is done or cancelled (Esc).

The update is the core's (``capsearch library add``): it runs in a thread worker, reports through a
:class:`~tui.workers.TuiReporter`, and keeps every finished batch when cancelled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, Select, Static

from core.errors import Cancelled, CapsearchError, ModelError
from core.safe_text import visible
from tui.messages import LibraryUpdated, Task, TaskFailed, TaskLog, TaskProgress
from tui.session import model_choices
from tui.workers import TuiReporter, run_task

if TYPE_CHECKING:
    from core.library.update import UpdateStats
    from tui.app import CapsearchApp
    from tui.library_session import LibraryRetriever


DEFAULT_MODEL = "<library>"
DEFAULT_MODEL_LABEL = "the library's own, else the best trained"


def checked_folder(text: str) -> Path:
    """``text`` as a readable folder (``~`` expanded); a CapsearchError saying what is wrong otherwise."""
    if not text.strip():
        raise CapsearchError("type the folder of photos to add", hint="e.g. ~/Pictures")
    path = Path(text.strip()).expanduser()
    if not path.exists():
        raise CapsearchError(f"no such folder: {visible(path)}", hint="check the spelling; ~ is your home")
    if not path.is_dir():
        raise CapsearchError(f"{visible(path)} is a file, not a folder", hint="give the folder that holds it")
    if not os.access(path, os.R_OK | os.X_OK):
        raise CapsearchError(f"{visible(path)} cannot be read", hint="check its permissions")
    return path.resolve()


def describe_stats(name: str, stats: UpdateStats) -> str:
    """One line on what an update did, as ``capsearch library add`` prints it."""
    return (
        f"library {visible(name)}: {stats.files} files, {stats.new} new, {stats.changed} changed, "
        f"{stats.gone} gone, {stats.embedded} embedded, {stats.unreadable + stats.failed} unreadable"
    )


class AddFolderDialog(ModalScreen[LibraryUpdated | None]):
    """Returns the finished update (its library opened for searching), or None when closed or cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", show=False)]

    if TYPE_CHECKING:
        from textual import getters

        app = getters.app(CapsearchApp)

    def __init__(self, library: str, current: LibraryRetriever | None) -> None:
        super().__init__()
        self.library = library
        self.current = current
        self.reporter: TuiReporter | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="add-box", classes="dialog"):
            yield Static("Add a folder of photos to a library", classes="dialog-title")
            with Grid(classes="form"):
                yield Label("Folder")
                yield Input(placeholder="a folder of photos, e.g. ~/Pictures", id="add-folder")
                yield Label("Library")
                yield Input(self.library, placeholder="library name", id="add-name")
                yield Label("Model")
                yield Select(
                    [(DEFAULT_MODEL_LABEL, DEFAULT_MODEL), *model_choices()],
                    value=DEFAULT_MODEL,
                    allow_blank=False,
                    id="add-model",
                )
            yield Static(id="add-error")
            with Horizontal(id="add-progress-row"):
                yield Static("", id="add-stage")
                yield ProgressBar(id="add-progress", show_eta=False)
            with Horizontal(classes="buttons"):
                yield Button("Add and index", variant="primary", id="add-ok")
                yield Button("Cancel", id="add-cancel")

    @property
    def running(self) -> bool:
        return self.reporter is not None

    def _say(self, text: str, error: bool = False) -> None:
        line = self.query_one("#add-error", Static)
        line.set_class(error, "-error")
        line.update(Text(text))

    # -- start ---------------------------------------------------------------------------------------
    @on(Button.Pressed, "#add-ok")
    @on(Input.Submitted)
    def _ok(self) -> None:
        if self.running:
            return
        from core.library.home import check_name

        try:
            folder = checked_folder(self.query_one("#add-folder", Input).value)
            name = check_name(self.query_one("#add-name", Input).value.strip())
        except CapsearchError as exc:
            self._say(
                f"⚠ {visible(exc.message)}" + (f" (next: {visible(exc.hint)})" if exc.hint else ""), True
            )
            return
        self._say(f"adding {visible(folder)} to library {visible(name)}…")
        model = str(self.query_one("#add-model", Select).value)
        for widget in self.query("Input, Select, #add-ok"):
            widget.disabled = True
        self.query_one("#add-progress-row").add_class("-running")
        self.reporter = TuiReporter(self, Task.LIBRARY)
        self._update(name, folder, None if model == DEFAULT_MODEL else model, self.reporter)

    @work(thread=True, exclusive=True, group="library-update")
    def _update(self, name: str, folder: Path, model: str | None, reporter: TuiReporter) -> None:
        from tui.library_session import add_folder

        def call() -> LibraryUpdated:
            return LibraryUpdated(name, *add_folder(name, folder, reporter, self.current, model))

        run_task(self, Task.LIBRARY, call)

    # -- progress and outcome ------------------------------------------------------------------------
    def on_task_progress(self, message: TaskProgress) -> None:
        message.stop()
        done = f" {message.done:,}/{message.total:,}" if message.total else f" {message.done:,}"
        self.query_one("#add-stage", Static).update(Text(message.stage + done))
        self.query_one(ProgressBar).update(total=message.total, progress=message.done)

    def on_task_log(self, message: TaskLog) -> None:
        message.stop()
        self._say(visible(message.text))

    def on_task_failed(self, message: TaskFailed) -> None:
        message.stop()
        self.reporter = None
        if isinstance(message.error, Cancelled):
            self.app.notify_error(message.error, title="Library update")
            self.dismiss(None)
            return
        self.app.notify_error(message.error, title="Could not add the folder")
        error = message.error
        text = error.message if isinstance(error, CapsearchError) else f"{type(error).__name__}: {error}"
        if isinstance(error, ModelError):
            text += " (next: choose a Model above)"
        self._say(f"⚠ {visible(text)}", True)
        for widget in self.query("Input, Select, #add-ok"):
            widget.disabled = False
        self.query_one("#add-progress-row").remove_class("-running")

    def on_library_updated(self, message: LibraryUpdated) -> None:
        message.stop()
        self.reporter = None
        self.app.notify(describe_stats(message.name, message.stats), title="Library updated", timeout=8)
        self.dismiss(message)

    # -- closing -------------------------------------------------------------------------------------
    @on(Button.Pressed, "#add-cancel")
    def action_cancel(self) -> None:
        """Close; while indexing, cancel it after the batch in flight (finished batches are kept)."""
        if self.reporter is None:
            self.dismiss(None)
            return
        self.reporter.cancel()
        self._say("cancelling after the batch in flight…")
