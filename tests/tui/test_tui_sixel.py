"""The Sixel preview leaves the terminal cursor on the image's last row (lnqs/textual-image#146)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from rich.control import Control
from textual.app import App, ComposeResult
from textual_image.widget.sixel import _ImageSixelImpl

from tui.widgets.image_preview import SixelPreviewImage


class OneImage(App[None]):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def compose(self) -> ComposeResult:
        image = SixelPreviewImage(self.path)
        image.styles.width, image.styles.height = 20, 6
        yield image


@pytest.mark.asyncio
async def test_sixel_data_ends_on_the_images_last_row(tmp_path: Path) -> None:
    path = tmp_path / "red.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path)
    app = OneImage(path)
    async with app.run_test(size=(60, 20)) as pilot:
        await pilot.pause()
        painter = app.query_one(_ImageSixelImpl)
        region = app.screen.find_widget(painter).visible_region
        segments = list(painter._get_sixel_segments("<sixel>"))
    assert segments[1].text == "<sixel>"
    # upstream moves to region.bottom, the row below the image, which a full repaint then writes onto
    assert segments[-1].text == Control.move_to(region.right, region.bottom - 1).segment.text
