"""The help screen: every key of the app and of each screen, read from their bindings (so it cannot drift)."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.screens.registry import SCREENS

# Keys of Textual's own and of widgets shown everywhere (each screen's widget keys are in its ScreenSpec).
EVERYWHERE_KEYS: list[tuple[str, str]] = [
    ("^p", "Command palette: every action below, searchable"),
    ("tab / shift+tab", "Move between inputs, lists and buttons"),
    ("^q", "Quit"),
]


def _key_table(rows: list[tuple[str, str]]) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(no_wrap=True, width=24)
    table.add_column()
    for key, what in rows:
        table.add_row(Text(key, style="bold"), what)
    return table


def binding_rows(app: App[Any], bindings: list[BindingType]) -> list[tuple[str, str]]:
    """(key, what it does) for each described binding."""
    rows = []
    for item in bindings:
        binding = item if isinstance(item, Binding) else Binding(*item)
        if binding.description:
            rows.append((app.get_key_display(binding), binding.tooltip or binding.description))
    return rows


class HelpScreen(ModalScreen[None]):
    """Escape, F1 or q closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "dismiss", "Close help", show=False),
    ]

    def sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """(title, [(key, what it does)]) for the app and each screen, read from their bindings."""
        out = [("Everywhere", binding_rows(self.app, list(self.app.BINDINGS)) + EVERYWHERE_KEYS)]
        for spec in SCREENS:
            out.append(
                (spec.title, binding_rows(self.app, list(spec.screen.BINDINGS)) + list(spec.extra_keys))
            )
        return out

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static("capsearch keys", id="help-title")
            with VerticalScroll():
                for i, (title, rows) in enumerate(self.sections()):
                    yield Static(Text(("\n" if i else "") + title, style="bold underline"))
                    yield Static(_key_table(rows))
            yield Static("esc closes · the mouse works too: click tabs, rows and buttons", id="help-foot")
