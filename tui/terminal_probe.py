"""Importing textual-image queries the terminal for Sixel and Kitty support; under tmux it must not.

tmux passes neither graphics protocol through by default, and it takes the Kitty query (an APC sequence,
``ESC _ G ... ESC \\``) as a new pane title. So under tmux, in the automatic preview mode, textual-image's
renderables are imported while stdout claims not to be a terminal: no query is sent (the app then draws
half cells). The cell-size lookup that follows still sees the real terminal.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from typing import Any


class _NotATerminal:
    """``stream`` in every respect but ``isatty()``."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _stdout_not_a_terminal() -> Iterator[None]:
    saved = sys.__stdout__
    sys.__stdout__ = _NotATerminal(saved)  # type: ignore[misc,assignment]  # read at import
    try:
        yield
    finally:
        sys.__stdout__ = saved  # type: ignore[misc]


def import_textual_image() -> None:
    """Import textual-image's widgets, without the support queries under tmux in automatic mode."""
    if "TMUX" in os.environ and os.environ.get("CAPSEARCH_PREVIEW", "auto") == "auto":
        with _stdout_not_a_terminal():
            importlib.import_module("textual_image.renderable")
    importlib.import_module("textual_image.widget")
