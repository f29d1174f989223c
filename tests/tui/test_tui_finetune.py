"""Fine-tune screen: start and cancel; a finished run's model becomes selectable everywhere."""

from __future__ import annotations

import pytest
from pilot_helpers import notifications, settle
from textual.widgets import DataTable, Input, Select

from tui.screens.finetune import FinetuneScreen
from tui.screens.open_dialog import OpenDialog

pytestmark = pytest.mark.asyncio


def selectable(select: Select, value: str) -> None:
    select.value = value  # raises InvalidSelectValueError when it is not one of the options
    assert select.value == value


async def start(pilot, epochs: str) -> FinetuneScreen:
    await pilot.press("f5")
    screen = pilot.app.screen
    assert isinstance(screen, FinetuneScreen)
    screen.query_one("#ft-epochs", Input).value = epochs
    screen.query_one("#ft-batch", Input).value = "16"
    screen.query_one("#ft-name", Input).value = "ft-test"
    await pilot.press("ctrl+g")
    return screen


async def test_a_fine_tune_can_be_started_and_cancelled(make_app, artifacts) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await start(pilot, epochs="200")
        assert screen.reporter is not None
        for _ in range(600):  # until training steps are reported
            await pilot.pause(0.1)
            if screen.losses:
                break
        assert screen.losses, notifications(app)
        assert "loss" in str(screen.query_one("#ft-live").render())
        await pilot.press("escape")
        await settle(pilot)
        assert screen.reporter is None
        assert any("Cancelled" in n for n in notifications(app))
        assert (artifacts / "models" / "ft-test" / "model.json").is_file()  # the weights so far stay loadable


async def test_a_finished_fine_tune_is_selectable_everywhere(make_app, artifacts) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await start(pilot, epochs="1")
        await settle(pilot, timeout=120)
        assert screen.reporter is None
        assert "done: ft-test" in str(screen.query_one("#ft-stage").render()), notifications(app)
        assert screen.query_one("#ft-table", DataTable).row_count >= 1  # one validation row per epoch
        new_model = str(artifacts / "models" / "ft-test")
        selectable(screen.query_one("#ft-base", Select), new_model)
        await pilot.press("f4")
        await pilot.pause()
        selectable(app.screen.query_one("#eval-model", Select), new_model)
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert isinstance(app.screen, OpenDialog)
        selectable(app.screen.query_one("#open-model", Select), new_model)
