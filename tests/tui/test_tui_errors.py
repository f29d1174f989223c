"""Core errors reach the user as notifications naming the next step, never as a traceback."""

from __future__ import annotations

import pytest
from pilot_helpers import notifications, set_query, settle

from core.errors import IndexMismatchError
from tui.app import CapsearchApp
from tui.session import Source
from tui.widgets.results_list import ResultsList

pytestmark = pytest.mark.asyncio


async def open_failing(source: Source) -> tuple[CapsearchApp, list[str], str]:
    app = CapsearchApp(source=source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.retriever is None
        await set_query(pilot, "a dog")
        await settle(pilot)
        summary = str(app.screen.query_one(ResultsList).query_one(".summary").render())
        return app, notifications(app), summary


async def test_nothing_prepared(artifacts) -> None:
    _, notes, summary = await open_failing(Source(dataset="flickr8k", model="capsearch-tiny"))
    (note,) = notes
    assert "no prepared dataset 'flickr8k'" in note
    assert "Next:" in note and "capsearch prepare" in note
    assert "Ctrl+O" in summary  # the app stays usable and says what to do


async def test_weights_unavailable(source: Source) -> None:
    _, notes, _ = await open_failing(
        Source(dataset=source.dataset, model="capsearch-tiny", pretrained="openai")
    )
    (note,) = notes
    assert "Could not open" in note and "Next:" in note
    assert "openai" in note


async def test_index_model_mismatch(source: Source, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.search import retriever

    def mismatch(*args, **kwargs):
        raise IndexMismatchError(
            "index was built by capsearch-tiny@random, not by this model",
            hint="rebuild it: capsearch index ...",
        )

    monkeypatch.setattr(retriever.Retriever, "open", mismatch)
    _, notes, _ = await open_failing(source)
    (note,) = notes
    assert "index was built by capsearch-tiny@random" in note
    assert "Next: rebuild it" in note
