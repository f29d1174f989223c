"""Bridges between the core's blocking calls and the UI: a Reporter that posts messages, and a runner.

Core work runs in Textual thread workers. The reporter posts :mod:`tui.messages` to the widget that
started the work (``post_message`` is thread-safe and never blocks the core on the UI); cancelling is
the core's own mechanism (``Reporter.cancel`` → ``Cancelled`` at the next safe point).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from textual.message import Message
from textual.message_pump import MessagePump

from core.progress import Reporter
from tui.messages import Task, TaskFailed, TaskLog, TaskProgress

if TYPE_CHECKING:
    from tui.app import CapsearchApp


class TuiReporter(Reporter):
    """Posts :class:`TaskProgress` / :class:`TaskLog` for ``task`` to ``target``, at most every ``interval`` s.

    Updates that finish a stage or carry extra info (loss, metrics) are always posted.
    """

    def __init__(self, target: MessagePump, task: Task, interval: float = 0.1) -> None:
        """Create it on the UI thread: it joins the app's ``reporters``, all cancelled when the app exits."""
        super().__init__()
        self.target = target
        self.task = task
        self.interval = interval
        self._last: dict[str, float] = {}
        cast("CapsearchApp", target.app).reporters.add(self)

    def update(self, stage: str, done: int, total: int | None = None, **info: Any) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if not (finished or info or now - self._last.get(stage, 0.0) >= self.interval):
            return
        self._last[stage] = now
        self.target.post_message(TaskProgress(self.task, stage, done, total, dict(info)))

    def log(self, message: str) -> None:
        self.target.post_message(TaskLog(self.task, message))


def run_task(target: MessagePump, task: Task, call: Callable[[], Message]) -> None:
    """Run ``call`` (in a worker thread) and post the message it returns, or :class:`TaskFailed`, to ``target``.

    Every exception becomes a message, so the UI shows a notification rather than a traceback.
    """
    try:
        outcome = call()
    except Exception as exc:  # noqa: BLE001 - shown to the user as a notification
        target.post_message(TaskFailed(task, exc))
        return
    target.post_message(outcome)
