"""The run form shared by Evaluate and Fine-tune: settings in a column, a results area beside it, one run
of core work at a time in a thread worker, with live progress and Cancel (Esc)."""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, ProgressBar, Static

from core.errors import CapsearchError
from tui.messages import Task, TaskFailed, TaskLog, TaskProgress
from tui.screens.base import CapsearchScreen
from tui.workers import TuiReporter

SettingsT = TypeVar("SettingsT")


class RunFormScreen(CapsearchScreen, Generic[SettingsT]):
    """A form whose :meth:`settings` start runs of core work; its widgets' ids begin with ``PREFIX``."""

    PREFIX: ClassVar[str]
    """The ids' prefix: ``{PREFIX}-form``, ``{PREFIX}-stage``, ``{PREFIX}-cancel``, ..."""
    WHAT: ClassVar[str]
    """What runs, for 'An evaluation is already running'."""
    TASKS: ClassVar[frozenset[Task]]
    """The tasks whose progress, notes and failures this screen shows."""

    def __init__(self) -> None:
        super().__init__()
        self.reporter: TuiReporter | None = None
        """The running task's reporter (None when idle)."""

    def compose_body(self) -> ComposeResult:
        p = self.PREFIX
        with Horizontal(id=f"{p}-body", classes="run-body"):
            with VerticalScroll(id=f"{p}-form", classes="form-column"):
                yield from self.compose_form()
                with Horizontal(classes="buttons"):
                    yield from self.compose_buttons()
                    yield Button(
                        "Cancel",
                        compact=True,
                        variant="error",
                        id=f"{p}-cancel",
                        disabled=True,
                        action="screen.cancel",
                    )
            with Vertical(id=f"{p}-main", classes="run-main"):
                with Horizontal(id=f"{p}-progress-row", classes="progress-row"):
                    yield Static("idle: choose the settings and press Ctrl+G", id=f"{p}-stage")
                    yield ProgressBar(id=f"{p}-progress", show_eta=False)
                yield from self.compose_results()

    def compose_form(self) -> ComposeResult:
        """The labelled inputs of the settings."""
        raise NotImplementedError

    def compose_buttons(self) -> ComposeResult:
        """The buttons that start runs (Cancel follows them)."""
        raise NotImplementedError

    def compose_results(self) -> ComposeResult:
        """What the runs fill in, under the progress row."""
        raise NotImplementedError

    def settings(self) -> SettingsT:
        """The form's values (raises CapsearchError for malformed ones)."""
        raise NotImplementedError

    # -- running -------------------------------------------------------------------------------------
    def begin(self, task: Task, stage: str, interval: float = 0.1) -> tuple[SettingsT, TuiReporter] | None:
        """The settings and a reporter for a run of ``task``, shown as ``stage``; None (and a
        notification) while another run is going or when the form is malformed."""
        if self.reporter is not None:
            self.notify(f"{self.WHAT} is already running (Esc cancels it).", severity="warning")
            return None
        try:
            settings = self.settings()
        except CapsearchError as err:
            self.app.notify_error(err, title="Check the settings")
            return None
        self.reporter = reporter = TuiReporter(self, task, interval)
        self._set_running(True, stage)
        return settings, reporter

    def action_cancel(self) -> None:
        if self.reporter is not None:
            self.reporter.cancel()
            self.show_stage("cancelling at the next safe point…")

    def _set_running(self, running: bool, stage: str) -> None:
        """Show ``stage``; while running only Cancel is enabled, after it the reporter is dropped."""
        self.show_stage(stage)
        for button in self.query(".buttons > Button").results(Button):
            button.disabled = running != (button.id == f"{self.PREFIX}-cancel")
        self.query_one(f"#{self.PREFIX}-progress", ProgressBar).set_class(running, "-running")
        if not running:
            self.reporter = None

    def show_stage(self, text: str) -> None:
        self.query_one(f"#{self.PREFIX}-stage", Static).update(text)

    # -- worker messages -----------------------------------------------------------------------------
    def on_task_progress(self, message: TaskProgress) -> None:
        if message.task not in self.TASKS:
            return
        message.stop()
        self.query_one(f"#{self.PREFIX}-progress", ProgressBar).update(
            total=message.total, progress=message.done
        )
        amount = f" {message.done}/{message.total}" if message.total else ""
        self.show_stage(self.stage_text(message.task, f"{message.stage}{amount}"))
        self.progress(message)

    def stage_text(self, task: Task, stage: str) -> str:
        """How progress of ``task`` reads: ``stage`` is the core's stage and count."""
        return stage

    def progress(self, message: TaskProgress) -> None:
        """Show what ``message`` reports beyond the stage and the count."""

    def on_task_log(self, message: TaskLog) -> None:
        if message.task in self.TASKS:
            message.stop()
            self.log.info(message.text)

    def on_task_failed(self, message: TaskFailed) -> None:
        if message.task not in self.TASKS:
            return
        message.stop()
        if self.reporter is not None and self.reporter.task == message.task:
            self._set_running(False, "stopped")
        self.app.notify_error(message.error, title=self.failure_title(message.task))
        self.failed(message.task)

    def failure_title(self, task: Task) -> str:
        return f"{task.capitalize()} failed"

    def failed(self, task: Task) -> None:
        """Called once a failure of ``task`` is shown."""
