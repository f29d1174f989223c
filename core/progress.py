"""Progress reporting and cancellation shared by every long-running core function.

Core functions take an optional :class:`Reporter`. The CLI passes one that drives rich progress bars,
the TUI one that posts Textual messages, tests the silent default. ``cancel()`` from any thread makes the
next ``check_cancelled()`` raise :class:`~core.errors.Cancelled`, at a point where nothing is half-written.
"""

from __future__ import annotations

import threading
from typing import Any

from core.errors import Cancelled


class Reporter:
    """Silent base reporter; subclasses override :meth:`update` (and may override :meth:`log`)."""

    def __init__(self) -> None:
        self._cancel = threading.Event()

    def update(self, stage: str, done: int, total: int | None = None, **info: Any) -> None:
        """``done`` of ``total`` units of ``stage`` are finished; ``info`` carries extras (loss, lr, metrics)."""

    def log(self, message: str) -> None:
        """A one-line note for the user (a skipped image, a reused cache)."""

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user")


def ensure(reporter: Reporter | None) -> Reporter:
    """``reporter`` or a silent one."""
    return reporter if reporter is not None else Reporter()
