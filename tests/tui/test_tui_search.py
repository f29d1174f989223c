"""Search screen: typing shows ranked results, directions, search-from-this, ground truth, stale results."""

from __future__ import annotations

import pytest
from pilot_helpers import notifications, set_query, settle, type_text
from textual.widgets import Input

from tui.screens.search import TOP_K, SearchScreen
from tui.widgets.detail_pane import DetailPane
from tui.widgets.query_bar import DirectionSwitch
from tui.widgets.results_list import ResultRow, ResultsList

pytestmark = pytest.mark.asyncio


def shown_ids(app) -> list[str]:
    return [row.hit.record.id for row in app.screen.query(ResultRow) if row.hit is not None]


async def test_typing_a_query_shows_the_ranked_results(make_app, retriever) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await type_text(pilot, "a big red circle")
        await settle(pilot)
        results = app.screen.query_one(ResultsList)
        expected = retriever.search_text("a big red circle", k=TOP_K)
        assert shown_ids(app) == [h.record.id for h in expected]
        assert [h.rank for h in results.hits] == list(range(1, len(expected) + 1))
        scores = [h.score for h in results.hits]
        assert scores == sorted(scores, reverse=True)
        assert "a big red circle" in str(results.query_one(".summary").render())
        # the detail pane follows the highlighted (first) result
        detail = str(app.screen.query_one("#detail-text").render())
        assert expected[0].record.id in detail


async def test_a_caption_query_marks_the_ground_truth_and_its_rank(make_app, retriever) -> None:
    # pick the caption whose image ranks lowest, so the truth is likely below the fold
    candidates = [c for r in retriever.records for c in r.captions[:1]]
    caption, (record, rank) = max(((c, retriever.ground_truth(c)) for c in candidates), key=lambda x: x[1][1])
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        app.screen.use_text(caption)
        await settle(pilot)
        truth_line = str(app.screen.query_one(".truth").render())
        assert f"ground truth {record.id} is at rank {rank}" in truth_line
        marked = [row.hit.record.id for row in app.screen.query(ResultRow) if row.has_class("-truth")]
        assert marked == ([record.id] if rank <= TOP_K else [])


async def test_switching_direction_searches_captions_by_image(make_app, retriever) -> None:
    image_id = retriever.records[3].id
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+t")
        assert app.screen.query_one(DirectionSwitch).direction == "image-text"
        await set_query(pilot, image_id)
        await settle(pilot)
        hits = app.screen.query_one(ResultsList).hits
        expected = retriever.image_to_text(image_id, k=TOP_K)
        assert [h.caption for h in hits] == [h.caption for h in expected]
        own = [
            row
            for row in app.screen.query(ResultRow)
            if row.hit is not None and row.hit.record.id == image_id
        ]
        assert own and all(row.has_class("-truth") for row in own)
        # the mouse works too: click the image → images segment
        await pilot.click("DirectionSwitch > .segment", offset=(40, 0))
        await settle(pilot)
        assert app.screen.query_one(DirectionSwitch).direction == "image-image"
        assert app.screen.query_one(ResultsList).hits[0].record.id == image_id


async def test_search_from_this_makes_the_selected_image_the_query(make_app, retriever) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await set_query(pilot, "a small green square")
        await settle(pilot)
        await pilot.press("down", "down", "enter")  # to the results, second result, search from it
        await settle(pilot)
        second = retriever.search_text("a small green square", k=TOP_K)[1].record.id
        assert app.screen.query_one(DirectionSwitch).direction == "image-image"
        assert app.screen.query_one("#query", Input).value == second
        assert shown_ids(app)[0] == second  # a gallery image finds itself first
        assert shown_ids(app) == [h.record.id for h in retriever.image_to_image(second, k=TOP_K)]


async def test_a_stale_search_never_overwrites_a_newer_one(make_app, retriever) -> None:
    """The first query's search is slow; its results must never be shown once a newer query was typed."""
    import threading

    release = threading.Event()

    class SlowFirst:
        def __init__(self, inner) -> None:
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def search_text(self, query: str, k: int = 10):
            if query == "red":
                release.wait(5)
            return self.inner.search_text(query, k)

    app = make_app(retriever=SlowFirst(retriever))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, SearchScreen)
        shown: list[str] = []
        original = screen.query_one(ResultsList).show_hits

        def spy(hits, truth, summary, **kwargs):
            shown.append(summary)
            original(hits, truth, summary, **kwargs)

        screen.query_one(ResultsList).show_hits = spy  # type: ignore[method-assign]
        await type_text(pilot, "red")
        await pilot.pause(0.15)  # the debounce fired: the slow search for "red" is running
        await type_text(pilot, " star")
        release.set()
        await settle(pilot)
        assert shown and all("“red”" not in s for s in shown)
        assert "“red star”" in shown[-1]
        assert shown_ids(app) == [h.record.id for h in retriever.search_text("red star", k=TOP_K)]


async def test_an_unknown_image_id_is_a_notification_on_enter(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        app.screen.query_one(DirectionSwitch).direction = "image-image"
        await set_query(pilot, "no_such_image")
        await settle(pilot)
        assert "⚠" in str(app.screen.query_one(".summary").render())  # inline while typing
        assert not notifications(app)
        await pilot.press("enter")
        await settle(pilot)
        (note,) = notifications(app)
        assert "no_such_image" in note and "Next:" in note


async def test_clearing_the_query_clears_results_and_detail(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await set_query(pilot, "blue star")
        await settle(pilot)
        assert app.screen.query_one(ResultsList).hits
        await pilot.press("ctrl+l")
        await settle(pilot)
        assert not app.screen.query_one(ResultsList).hits
        assert app.screen.query_one(DetailPane).query_one("#detail-text").render().plain == ""
