"""The Open dialog (Ctrl+O): which dataset, model, weights, split and index to search."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from core.data.records import SPLITS
from tui.session import Source
from tui.widgets.choices import DatasetSelect, ModelSelect, chosen

INDEX_KINDS = [("auto (exact for small galleries)", "auto"), ("exact", "exact"), ("HNSW", "hnsw")]


class OpenDialog(ModalScreen[Source | None]):
    """Returns the chosen :class:`Source`, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel", show=False)]

    def __init__(self, current: Source) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        cur = self.current
        with Vertical(id="open-box", classes="dialog"):
            yield Static("Open a dataset and a model", classes="dialog-title")
            with Grid(classes="form"):
                yield Label("Dataset")
                yield DatasetSelect(cur.dataset, compact=False, id="open-dataset")
                yield Label("Model")
                yield ModelSelect(cur.model, compact=False, id="open-model")
                yield Label("Weights")
                yield Input(
                    cur.pretrained or "",
                    placeholder="none, an open_clip tag (openai) or a file",
                    id="open-pretrained",
                )
                yield Label("Split")
                yield Select([(s, s) for s in SPLITS], value=cur.split, allow_blank=False, id="open-split")
                yield Label("Index")
                yield Select(INDEX_KINDS, value=cur.index, allow_blank=False, id="open-index")
            with Horizontal(classes="buttons"):
                yield Button("Open", variant="primary", id="open-ok")
                yield Button("Cancel", id="open-cancel")

    @on(Button.Pressed, "#open-cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#open-ok")
    @on(Input.Submitted)
    def _ok(self) -> None:
        pretrained = self.query_one("#open-pretrained", Input).value.strip() or None
        self.dismiss(
            Source(
                dataset=chosen(self.query_one("#open-dataset", Select)),
                model=chosen(self.query_one("#open-model", Select)),
                pretrained=pretrained,
                split=str(self.query_one("#open-split", Select).value),
                index=str(self.query_one("#open-index", Select).value),
            )
        )
