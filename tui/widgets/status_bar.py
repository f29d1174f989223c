"""The bottom status line: active dataset and split, model id, index type and vector count, or what is loading."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.widgets import Static

from core.safe_text import visible

if TYPE_CHECKING:
    from textual import getters

    from tui.app import CapsearchApp


MODEL_WIDTH = 40
"""Longest model id shown whole: a pretrained-tower model's id also names its packages and versions (over
100 characters), which pushed the index and vector count off the one line."""


def _shortened(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class StatusBar(Static):
    """Follows the app's ``retriever`` and ``activity`` reactives."""

    if TYPE_CHECKING:  # as Textual types its own ``app``: at run time the app module imports this one
        app = getters.app(CapsearchApp)

    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        padding: 0 1;
        background: $panel;
        color: $text-muted;
    }
    """

    def on_mount(self) -> None:
        self.watch(self.app, "retriever", self._refresh, init=False)
        self.watch(self.app, "activity", self._refresh, init=False)
        self._refresh()

    def _refresh(self, _value: Any = None) -> None:
        retriever, activity = self.app.retriever, self.app.activity
        text = Text(no_wrap=True, overflow="ellipsis")
        if retriever is not None:
            for label, value in (
                ("dataset", f"{retriever.dataset}/{retriever.split}"),
                ("model", _shortened(retriever.model_id, MODEL_WIDTH)),
                ("index", retriever.index_kind),
                ("vectors", f"{retriever.size:,}"),
            ):
                text.append(f"{label} ", "dim")
                text.append(f"{visible(value)}   ", "bold")
        elif not activity:
            text.append("no model loaded: Ctrl+O opens a dataset and a model", "dim")
        if activity:
            text.append(f"⟳ {activity}", "bold yellow")
        self.update(text)
