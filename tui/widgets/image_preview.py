"""An image preview that loads lazily in a worker and shows a placeholder for missing or broken images.

The textual-image widget class is picked before Textual starts (importing ``textual_image.widget`` queries
the terminal): the best protocol the terminal supports (Kitty TGP, Sixel) on a TTY, colored half cells
elsewhere (headless tests). Under tmux, which shows neither protocol by default and turns the Kitty
probe (an APC sequence) into the pane's title, nothing is probed and half cells are used.
``CAPSEARCH_PREVIEW`` (set by ``capsearch app --preview``) forces one: kitty, sixel, halfcell or unicode.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PIL import Image as PILImage
from rich.control import Control
from rich.segment import Segment
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.widget import Widget

from tui.terminal_probe import import_textual_image

import_textual_image()  # before the imports below: they would probe the terminal

from textual_image.widget import HalfcellImage, SixelImage, TGPImage, UnicodeImage
from textual_image.widget import Image as AutoImage
from textual_image.widget._base import Image as BaseImage
from textual_image.widget.sixel import _ImageSixelImpl

from tui import thumbs


class _SixelData(_ImageSixelImpl):
    """textual-image's Sixel painter with the cursor left on the image's last row, not the row below it.

    The Sixel data rides on the image's last row, and textual-image 0.12.0 then moves the cursor to
    ``visible_region.bottom``: one row too low. Partial updates move the cursor before every chunk, but a
    full repaint (a screen switched or resumed) writes each row in one go, so the rest of that row went to
    the row below and the old cells stayed on screen (lnqs/textual-image#146).
    """

    def _get_sixel_segments(self, sixel_data: str) -> list[Segment]:
        *segments, move = super()._get_sixel_segments(sixel_data)
        region = self.screen.find_widget(self).visible_region
        return [*segments, Segment(Control.move_to(region.right, region.bottom - 1).segment.text, move.style)]


class SixelPreviewImage(SixelImage, Renderable=SixelImage._Renderable):
    """textual-image's Sixel widget drawn by ``_SixelData``."""

    def compose(self) -> ComposeResult:
        yield _SixelData(self.image, self._sixel_options)


PREVIEW_MODES: dict[str, type[BaseImage]] = {
    "kitty": TGPImage,
    "sixel": SixelPreviewImage,
    "halfcell": HalfcellImage,
    "unicode": UnicodeImage,
}


def _image_class() -> type[BaseImage]:
    mode = os.environ.get("CAPSEARCH_PREVIEW", "auto")
    if mode in PREVIEW_MODES:
        return PREVIEW_MODES[mode]
    if not (sys.__stdout__ and sys.__stdout__.isatty()) or "TMUX" in os.environ:
        return HalfcellImage
    return SixelPreviewImage if AutoImage is SixelImage else AutoImage


ImageWidget = _image_class()


def decode(path: Path, box: tuple[int, int]) -> tuple[PILImage.Image | None, str]:
    """The thumbnail of ``path``, or None and the placeholder text saying why it can't be shown."""
    try:
        return thumbs.load(path, box), ""
    except Exception as exc:  # noqa: BLE001 - any unreadable image becomes a placeholder, never a crash
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return None, f"⚠ can't show image: {reason}"


class ImagePreview(Widget):
    """Shows one image file scaled into the widget's box (aspect kept), or a one-line placeholder."""

    class Loaded(Message, bubble=False):
        """A worker decoded ``path`` (``image`` is None when it is unreadable; ``note`` says why)."""

        def __init__(self, path: Path, image: PILImage.Image | None, note: str) -> None:
            super().__init__()
            self.path = path
            self.image = image
            self.note = note

    DEFAULT_CSS = """
    ImagePreview {
        width: 1fr;
        height: 1fr;
        align: center middle;
        content-align: center middle;
        color: $text-muted;
        & > .preview-image { width: auto; height: auto; }
        &.-broken { color: $text-warning; }
    }
    """

    def __init__(self, empty: str = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._empty = empty
        self.path: Path | None = None
        self.note = empty
        """What the preview says instead of an image ('' while one is shown)."""

    def compose(self) -> ComposeResult:
        image = ImageWidget(classes="preview-image")
        image.display = False
        yield image

    def render(self) -> Text:
        """The note, under the (hidden when absent) image child: one widget less per preview."""
        return Text(self.note, overflow="ellipsis")

    def show(self, path: Path | None) -> None:
        """Show ``path`` (None: the empty note): at once when cached, else decoded in a worker."""
        if path == self.path:
            return
        self.path = path
        if path is None:
            self._set(None, self._empty)
            return
        box = thumbs.box_for(self.size.width or 16, self.size.height or 8)
        image = thumbs.cached(path, box)
        if image is not None:
            self._set(image)
        else:
            self._set(None, "…")
            self.call_after_refresh(self._load_if_current, path, box)  # after the repaint (typing first)

    def _load_if_current(self, path: Path, box: tuple[int, int]) -> None:
        if path == self.path:
            self._load(path, box)

    @work(thread=True, exclusive=True, group="preview")
    def _load(self, path: Path, box: tuple[int, int]) -> None:
        image, note = decode(path, box)
        self.post_message(self.Loaded(path, image, note))

    def on_image_preview_loaded(self, message: Loaded) -> None:
        if message.path == self.path:  # a newer image was asked for meanwhile: drop this one
            self._set(message.image, message.note)

    def set_image(self, path: Path, image: PILImage.Image | None, note: str = "") -> None:
        """Show an image someone else decoded (bulk thumbnail loading in a list)."""
        self.path = path
        self._set(image, note)

    def _set(self, image: PILImage.Image | None, note: str = "") -> None:
        widget = self.query_one(".preview-image", ImageWidget)
        widget.image = image
        widget.display = image is not None
        self.note = "" if image is not None else note
        self.set_class(image is None and note.startswith("⚠"), "-broken")
        self.refresh()
