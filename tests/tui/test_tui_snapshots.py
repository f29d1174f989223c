"""Snapshots of every screen at 120×40 with fixed data: the small synthetic dataset at a fixed path, and
results from a stand-in retriever and evaluation (tests/tui/fixed_data.py), so that the pictures are the
same on every machine. The pilot tests exercise the real core.

Update after an intended change with ``pytest tests/tui/test_tui_snapshots.py --snapshot-update`` and look
at the report before committing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixed_data import FixedRetriever, fixed_eval
from pilot_helpers import settle
from textual.pilot import Pilot
from textual.widgets import Input

from tui.session import Source

SIZE = (120, 40)
# Paths are on screen (the detail pane, the dataset choice), so the data lives at a fixed place.
DATA = Path("/tmp/capsearch-snapshots/synthetic-small")


@pytest.fixture(scope="module")
def source() -> Source:
    """Overrides the shared fixture: the same small synthetic dataset, prepared at a fixed path."""
    from core.data.prepare import prepare_synthetic

    prepare_synthetic(n=120, seed=0, out=DATA)
    return Source(dataset=str(DATA), model="capsearch-tiny", split="test", index="exact")


@pytest.fixture(scope="module")
def retriever(source: Source) -> FixedRetriever:
    from core.data.records import load_dataset

    return FixedRetriever(load_dataset(source.dataset), source.split)


async def steady(pilot: Pilot) -> None:
    """Everything loaded, no toasts, no blinking cursor: the frame is the same on every run."""
    await settle(pilot)
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False
    pilot.app.clear_notifications()
    await pilot.pause()


def test_search_screen(snap_compare, make_app, retriever) -> None:
    caption = retriever.records[2].captions[1]

    async def run_before(pilot: Pilot) -> None:
        pilot.app.screen.use_text(caption)
        await settle(pilot)
        await pilot.press("down", "down")
        await steady(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_search_screen_image_to_captions(snap_compare, make_app, retriever) -> None:
    async def run_before(pilot: Pilot) -> None:
        await pilot.press("ctrl+t")
        pilot.app.screen.use_image(retriever.records[5].id)
        await steady(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_browse_screen(snap_compare, make_app) -> None:
    async def run_before(pilot: Pilot) -> None:
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("down", "down", "down")
        await steady(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_evaluate_screen_after_a_run(snap_compare, make_app, retriever, artifacts, monkeypatch) -> None:
    from core.evaluation import results, runner

    result = fixed_eval(retriever)
    summary = result.to_json()
    history = [
        {**summary, "model_id": "capsearch-compact-scratch@random", "timestamp": "2026-11-26T09:30:00+00:00"},
        summary,
    ]
    monkeypatch.setattr(runner, "run_eval", lambda *args, **kwargs: result)
    monkeypatch.setattr(results, "load_history", lambda: history)

    async def run_before(pilot: Pilot) -> None:
        await pilot.press("f4", "ctrl+g")
        await steady(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_finetune_screen(snap_compare, make_app) -> None:
    async def run_before(pilot: Pilot) -> None:
        await pilot.press("f5")
        await steady(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_help_screen(snap_compare, make_app) -> None:
    async def run_before(pilot: Pilot) -> None:
        await pilot.press("f1")
        await steady(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_duplicates_screen(snap_compare, make_app, monkeypatch: pytest.MonkeyPatch) -> None:
    from fixed_data import fixed_duplicates

    monkeypatch.setattr(
        "tui.screens.duplicates.compute_duplicates",
        lambda retriever, threshold, _reporter: fixed_duplicates(retriever.data, retriever.split, threshold),
    )

    async def run_before(pilot: Pilot) -> None:
        await pilot.press("f6")
        await settle(pilot)
        await pilot.press("down")
        await steady(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_search_screen_library_filters(snap_compare, source: Source) -> None:
    """A library open: the filter row set (one field refused, explained below it), scores on each row."""
    from fixed_data import FixedLibrary
    from textual.widgets import Select

    from core.data.records import load_dataset
    from tui.app import CapsearchApp

    library = FixedLibrary(load_dataset(source.dataset))

    async def run_before(pilot: Pilot) -> None:
        screen = pilot.app.screen
        await settle(pilot)
        screen.query_one("#filter-after", Input).value = "2018-01-01"
        screen.query_one("#filter-folder", Input).value = "images"
        screen.query_one("#filter-camera", Input).value = "pixel"
        screen.query_one("#filter-min_score", Input).value = "0.1"
        screen.query_one("#filter-sort", Select).value = "date"
        screen.use_text("two dogs in the snow")
        await settle(pilot)
        screen.query_one("#filter-before", Input).value = "2017-13-01"
        await settle(pilot)
        screen.query_one("#query", Input).focus()
        await steady(pilot)

    app = CapsearchApp(Source(library="photos"), retriever=library)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_add_folder_dialog(snap_compare, make_app) -> None:
    """The Add folder dialog refusing a folder that does not exist."""

    async def run_before(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("ctrl+n")
        await pilot.pause()
        pilot.app.screen.query_one("#add-folder", Input).value = "/nonexistent/holiday photos"
        await pilot.press("enter")
        await steady(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)
