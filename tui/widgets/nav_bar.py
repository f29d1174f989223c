"""The top bar: the app name and the screens, the active one highlighted; click or press F2–F5."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.events import Click
from textual.widgets import Static

SCREENS: dict[str, tuple[str, str]] = {
    "search": ("F2", "Search"),
    "browse": ("F3", "Browse"),
    "evaluate": ("F4", "Evaluate"),
    "finetune": ("F5", "Fine-tune"),
}


class _Tab(Static):
    def __init__(self, mode: str, active: bool) -> None:
        key, title = SCREENS[mode]
        super().__init__(f"{key} {title}", classes="tab -active" if active else "tab")
        self.mode = mode

    async def on_click(self, event: Click) -> None:
        event.stop()
        await self.app.run_action(f"app.switch_mode('{self.mode}')")


class NavBar(Horizontal):
    """``capsearch`` and one tab per screen; F1 help on the right."""

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

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        yield Static("capsearch", classes="brand")
        for mode in SCREENS:
            yield _Tab(mode, mode == self.current)
        yield Static(classes="spacer")
        yield Static("F1 help  ^P commands  ^O open  ^Q quit", classes="hint")
