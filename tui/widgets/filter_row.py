"""The search pane's library filters on one row: dates, folder, camera, minimum score, order and
collapsing duplicates; a bad field is marked and explained on the line below it."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Checkbox, Input, Label, Select, Static

from core.safe_text import visible
from tui.library_filters import FilterError, FilterText

SORT_CHOICES = [("by score", "score"), ("by date", "date")]
FIELDS = ("after", "before", "folder", "camera", "min_score")
LABELS = {"after": "after", "before": "before", "folder": "in", "camera": "camera", "min_score": "min"}
PLACEHOLDERS = {
    "after": "YYYY-MM-DD",
    "before": "YYYY-MM-DD",
    "folder": "folder…",
    "camera": "camera…",
    "min_score": "score…",
}
TOOLTIPS = {
    "after": "Taken on or after this date (EXIF date, else the file's time): YYYY-MM-DD[THH:MM]",
    "before": "Taken before this date: YYYY-MM-DD[THH:MM]",
    "folder": "Only photos under this folder (absolute, or relative to a library folder)",
    "camera": "Only photos whose camera model contains this text (any case)",
    "min_score": "Drop results scoring below this cosine similarity (-1 to 1)",
}


class FilterRow(Vertical):
    """Posts :class:`FilterRow.Changed` whenever a field changes; read the fields with :attr:`text`."""

    DEFAULT_CSS = """
    FilterRow {
        height: auto;
        padding: 0 1;
        & > Horizontal { height: 1; }
        & Label { width: auto; margin-right: 1; color: $text-muted; }
        & Input { width: 12; margin-right: 1; }
        & #filter-folder { width: 1fr; }
        & #filter-min_score { width: 7; }
        & Input.-invalid { background: $error 40%; }
        & Select { width: 12; margin-right: 1; }
        & Checkbox { width: auto; }
        & > .filter-error { height: auto; color: $text-error; display: none; }
        & > .filter-error.-shown { display: block; }
    }
    """

    class Changed(Message):
        """A filter field changed; ``submitted`` when Enter was pressed in one."""

        def __init__(self, submitted: bool = False) -> None:
            super().__init__()
            self.submitted = submitted

    def compose(self) -> ComposeResult:
        with Horizontal():
            for name in FIELDS:
                yield Label(LABELS[name])
                yield Input(
                    placeholder=PLACEHOLDERS[name],
                    tooltip=TOOLTIPS[name],
                    classes="compact",
                    id=f"filter-{name}",
                )
            yield Select(SORT_CHOICES, value="score", allow_blank=False, compact=True, id="filter-sort")
            yield Checkbox(
                "dedup",
                compact=True,
                tooltip="Collapse near-identical photos to the best one",
                id="filter-dedup",
            )
        yield Static(classes="filter-error")

    @property
    def text(self) -> FilterText:
        values = {name: self.query_one(f"#filter-{name}", Input).value for name in FIELDS}
        sort = self.query_one("#filter-sort", Select).value
        dedup = self.query_one("#filter-dedup", Checkbox).value
        return FilterText(**values, sort=str(sort), dedup=dedup)

    def show_error(self, error: FilterError | None) -> None:
        """Mark the field ``error`` names and explain it below the row; None clears both."""
        for name in FIELDS:
            self.query_one(f"#filter-{name}", Input).set_class(
                error is not None and error.field == name, "-invalid"
            )
        line = self.query_one(".filter-error", Static)
        line.set_class(error is not None, "-shown")
        if error is not None:
            hint = f" ({error.hint})" if error.hint else ""
            line.update(Text(f"⚠ {visible(error.message)}{visible(hint)}"))

    def focus_first(self) -> None:
        self.query_one(f"#filter-{FIELDS[0]}", Input).focus()

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _changed(self, event: Message) -> None:
        event.stop()
        self.post_message(self.Changed())

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Changed(submitted=True))
