"""The base of the app's top-level screens: a typed ``app``, and the bars every screen shows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from tui.widgets.nav_bar import NavBar
from tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from textual import getters

    from tui.app import CapsearchApp


class CapsearchScreen(Screen[None]):
    """The nav bar on top, :meth:`compose_body` in between, the status bar and the key footer below."""

    if TYPE_CHECKING:  # as Textual types its own ``app``: at run time the app module imports this one
        app = getters.app(CapsearchApp)

    def compose(self) -> ComposeResult:
        yield NavBar()
        yield from self.compose_body()
        yield StatusBar()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        """What the screen shows between the bars."""
        raise NotImplementedError
