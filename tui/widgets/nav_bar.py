"""The top bar: the app name and the screens, the active one highlighted; click or press F2–F5."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.events import Click
from textual.widgets import Static


class _Tab(Static):
    def __init__(self, label: str, mode: str, active: bool) -> None:
        super().__init__(label, classes="tab -active" if active else "tab")
        self.mode = mode

    async def on_click(self, event: Click) -> None:
        event.stop()
        await self.app.run_action(f"app.switch_mode('{self.mode}')")


class NavBar(Horizontal):
    """``capsearch`` and one tab per screen of :data:`tui.screens.registry.SCREENS`; F1 help on the right."""

    DEFAULT_CSS = """
    NavBar {
        dock: top;
        height: 1;
        background: $panel;
        & > .brand { width: auto; padding: 0 2 0 1; text-style: bold; color: $accent; }
        & > .tab { width: auto; padding: 0 1; color: $text-muted; }
        & > .tab:hover { background: $boost; }
        & > .tab.-active { background: $primary; color: $text; text-style: bold; }
        & > .spacer { width: 1fr; }
        & > .hint { width: auto; padding: 0 1; color: $text-muted; }
    }
    """

    def compose(self) -> ComposeResult:
        # Imported here: the registry imports the screens, and they show this bar.
        from tui.screens.registry import SCREENS

        yield Static("capsearch", classes="brand")
        for spec in SCREENS:
            yield _Tab(f"{spec.key.upper()} {spec.title}", spec.name, isinstance(self.screen, spec.screen))
        yield Static(classes="spacer")
        yield Static("F1 help  ^P commands  ^O open  ^Q quit", classes="hint")
