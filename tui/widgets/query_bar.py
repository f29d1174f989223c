"""The search query: a direction switch (text→images, image→captions, image→images) and the query input."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.events import Click
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, Static

DIRECTIONS: dict[str, str] = {
    "text-image": "text → images",
    "image-text": "image → captions",
    "image-image": "image → images",
}
PLACEHOLDERS: dict[str, str] = {
    "text-image": "describe a picture…  (also: dog + snow - night, 2:dog)",
    "image-text": "an image id or a path to an image file (Ctrl+R on a result uses it)",
    "image-image": "an image id or a path to an image file (Ctrl+R on a result uses it)",
}


def is_image_direction(direction: str) -> bool:
    return direction.startswith("image-")


class _Segment(Static):
    def __init__(self, direction: str) -> None:
        super().__init__(DIRECTIONS[direction], classes="segment")
        self.direction = direction

    def on_click(self, event: Click) -> None:
        event.stop()
        switch = self.parent
        if isinstance(switch, DirectionSwitch):
            switch.direction = self.direction


class DirectionSwitch(Horizontal, can_focus=True):
    """Three segments; click one, or focus the switch and use ←/→."""

    DEFAULT_CSS = """
    DirectionSwitch {
        width: auto;
        height: 1;
        & > .segment { width: auto; padding: 0 1; color: $text-muted; }
        & > .segment.-active { background: $primary; color: $text; text-style: bold; }
        &:focus > .segment.-active { background: $accent; }
    }
    """
    BINDINGS = [
        Binding("left", "step(-1)", "Previous direction", show=False),
        Binding("right", "step(1)", "Next direction", show=False),
    ]

    direction: reactive[str] = reactive("text-image")

    class Changed(Message):
        def __init__(self, switch: DirectionSwitch, direction: str) -> None:
            super().__init__()
            self.switch = switch
            self.direction = direction

        @property
        def control(self) -> DirectionSwitch:
            return self.switch

    def compose(self) -> ComposeResult:
        for direction in DIRECTIONS:
            yield _Segment(direction)

    def watch_direction(self, direction: str) -> None:
        for segment in self.query(_Segment):
            segment.set_class(segment.direction == direction, "-active")
        self.post_message(self.Changed(self, direction))

    def action_step(self, delta: int) -> None:
        names = list(DIRECTIONS)
        self.direction = names[(names.index(self.direction) + delta) % len(names)]


class QueryBar(Horizontal):
    """Direction switch and query input on one row."""

    DEFAULT_CSS = """
    QueryBar {
        height: 3;
        padding: 0 1;
        & > DirectionSwitch { margin: 1 1 0 0; }
        & > Input { width: 1fr; }
    }
    """

    def compose(self) -> ComposeResult:
        yield DirectionSwitch(id="direction")
        yield Input(placeholder=PLACEHOLDERS["text-image"], id="query")

    @on(DirectionSwitch.Changed)
    def _placeholder(self, event: DirectionSwitch.Changed) -> None:
        self.query_one("#query", Input).placeholder = PLACEHOLDERS[event.direction]
