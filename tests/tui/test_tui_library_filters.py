"""The search pane's library filters: each one changes the results exactly as the core's Filters do (the
same object the CLI builds), the score is shown on every row, and bad input is explained, not raised."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from library_fixture import MTIME_2015, PhotoLibrary
from pilot_helpers import notifications, set_query, settle
from textual.widgets import Checkbox, Input, Select

from tui.app import CapsearchApp
from tui.session import Source
from tui.widgets.filter_row import FilterRow
from tui.widgets.results_list import ResultRow, ResultsList

pytestmark = pytest.mark.asyncio
QUERY = "a photo"


def app_for(library: PhotoLibrary) -> CapsearchApp:
    return CapsearchApp(Source(library="mine"), retriever=library.retriever)


async def search(pilot, **fields: object) -> list:
    """Set the filter fields (after=..., sort=..., dedup=...; the others cleared), search QUERY and return
    the hits shown."""
    screen = pilot.app.screen
    blank = {
        "after": "",
        "before": "",
        "folder": "",
        "camera": "",
        "min_score": "",
        "sort": "score",
        "dedup": False,
    }
    for name, value in {**blank, **fields}.items():
        widget = screen.query_one(f"#filter-{name}")
        assert isinstance(widget, Input | Select | Checkbox)
        widget.value = value
    screen.query_one("#query", Input).focus()
    await set_query(pilot, QUERY)
    await settle(pilot)
    return list(screen.query_one(ResultsList).hits)


def names(hits: list, library: PhotoLibrary) -> set[str]:
    return {str(Path(h.path).relative_to(library.root)) for h in hits}


ALL = {"2018/a0.jpg", "2018/a1.jpg", "2018/a2.jpg", "2020/b0.jpg", "2020/b1.jpg", "2020/b2.jpg"}
ALL |= {"2020/b0 copy.jpg", "scans/c0.jpg"}


CASES = [
    ({}, ALL),
    ({"after": "2019-01-01"}, {n for n in ALL if n.startswith("2020")}),
    ({"before": "2016-01-01"}, {"scans/c0.jpg"}),  # no EXIF date: the file's time counts
    (
        {"after": "2018-03-15", "before": "2020-03-15"},
        {"2018/a1.jpg", "2018/a2.jpg", "2020/b0.jpg", "2020/b0 copy.jpg"},
    ),
    ({"folder": "2018"}, {"2018/a0.jpg", "2018/a1.jpg", "2018/a2.jpg"}),  # relative to the library's root
    ({"camera": "canon"}, {n for n in ALL if n.startswith("2020")}),
    ({"camera": "pixel", "after": "2018-04-01"}, {"2018/a1.jpg", "2018/a2.jpg"}),
]


async def test_each_filter_narrows_the_results(photo_library: PhotoLibrary) -> None:
    app = app_for(photo_library)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.screen.query_one(FilterRow).display  # shown for a library
        for fields, expected in CASES:
            hits = await search(pilot, **fields)
            assert names(hits, photo_library) == expected, fields
            assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


async def test_min_score_drops_weak_matches_and_rows_show_scores(photo_library: PhotoLibrary) -> None:
    app = app_for(photo_library)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        everything = await search(pilot)
        scores = sorted((h.score for h in everything), reverse=True)
        assert len(set(scores)) > 3
        cut = (scores[2] + scores[3]) / 2  # keeps exactly three
        kept = await search(pilot, min_score=f"{cut:.6f}")
        assert [h.score for h in kept] == scores[:3]
        rows = [row for row in app.screen.query(ResultRow) if row.hit is not None]
        assert len(rows) == 3
        for row in rows:
            assert f"{row.hit.score:6.3f}" in str(row.query_one(".row-text").render())
        summary = str(app.screen.query_one(ResultsList).query_one(".summary").render())
        assert "score ≥" in summary


async def test_sort_by_date_orders_newest_first(photo_library: PhotoLibrary) -> None:
    app = app_for(photo_library)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        by_score = await search(pilot)
        by_date = await search(pilot, sort="date")
        dates = [h.record.captions[0] for h in by_date]  # "YYYY-MM-DD HH:MM · camera"
        assert dates == sorted(dates, reverse=True)
        assert names(by_date, photo_library) == names(by_score, photo_library)
        assert [h.path for h in by_date] != [h.path for h in by_score]
        assert by_date[-1].record.captions[0].startswith(time.strftime("%Y-%m-%d", time.gmtime(MTIME_2015)))


async def test_dedup_collapses_the_copy(photo_library: PhotoLibrary) -> None:
    # The random tiny model puts every noise photo above 0.98 of every other; the default rule still
    # tells them apart by their perceptual hashes, and the byte copy is a duplicate.
    app = app_for(photo_library)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert names(await search(pilot), photo_library) == ALL
        deduped = await search(pilot, dedup=True)
        shown = names(deduped, photo_library)
        assert len(shown) == 7 and len(shown & {"2020/b0.jpg", "2020/b0 copy.jpg"}) == 1
        assert [h.rank for h in deduped] == list(range(1, 8))
        both_ways = await search(pilot, sort="date", dedup=True)
        assert names(both_ways, photo_library) == shown


BAD = [
    ("after", "2018-13-45", "after: not a date: '2018-13-45'"),
    ("min_score", "2", "min score: 2 is out of range"),
    ("min_score", "high", "min score: 'high' is not a number"),
    ("folder", "nowhere", "in: no folder 'nowhere'"),
]


async def test_bad_input_is_explained_not_raised(photo_library: PhotoLibrary) -> None:
    app = app_for(photo_library)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        before = await search(pilot)
        row = app.screen.query_one(FilterRow)
        for name, value, message in BAD:
            field = app.screen.query_one(f"#filter-{name}", Input)
            field.value = value
            await settle(pilot)
            assert message in str(row.query_one(".filter-error").render())
            assert field.has_class("-invalid")
            assert app.screen.query_one(ResultsList).hits == before  # unchanged, nothing raised
            assert notifications(app) == []
            field.focus()
            await pilot.press("enter")  # an explicit search names the problem in a notification too
            await settle(pilot)
            (note,) = notifications(app)
            assert note.startswith("Filters: ") and message in note
            app.clear_notifications()
            field.value = ""
            await settle(pilot)
            assert not field.has_class("-invalid")
            assert not row.query_one(".filter-error").has_class("-shown")


async def test_ctrl_f_toggles_the_filters_and_datasets_have_none(
    make_app, photo_library: PhotoLibrary
) -> None:
    app = app_for(photo_library)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        row = app.screen.query_one(FilterRow)
        await pilot.press("ctrl+f")
        assert app.focused is row.query_one("#filter-after")
        await pilot.press("ctrl+f")
        assert not row.display and app.focused is app.screen.query_one("#query")
        await pilot.press("ctrl+f")
        assert row.display
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert not app.screen.query_one(FilterRow).display
        await pilot.press("ctrl+f")
        assert "Filters apply to a photo library" in notifications(app)[0]


async def test_search_from_a_library_result_uses_its_file_and_the_filters(
    photo_library: PhotoLibrary,
) -> None:
    app = app_for(photo_library)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await search(pilot, folder="2020")
        await pilot.press("down", "down")  # the second result
        chosen = app.screen.query_one(ResultsList).highlighted
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert app.screen.query_one("#query", Input).value == str(chosen.path)
        hits = app.screen.query_one(ResultsList).hits
        best = [h.path for h in hits if h.score > 1 - 1e-5]  # the file (and its byte copy, if it has one)
        assert chosen.path in best and hits[0].path in best
        assert names(hits, photo_library) == {n for n in ALL if n.startswith("2020")}  # still filtered


async def test_browse_lists_the_library_files_and_opens_one_in_search(photo_library: PhotoLibrary) -> None:
    from textual.widgets import DataTable

    from tui.screens.browse import BrowseScreen

    app = app_for(photo_library)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("f3")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, BrowseScreen)
        assert [r.id for r in screen.shown] == sorted(ALL)
        table = screen.query_one("#browse-table", DataTable)
        assert table.row_count == 8
        assert [c.label.plain for c in table.columns.values()] == ["#", "path", "date · camera"]
        assert (
            screen.query_one("#browse-filter", Input).placeholder == "filter: date · camera or path contains…"
        )
        screen.query_one("#browse-filter", Input).value = "canon"  # date · camera is the caption
        await settle(pilot)
        assert [r.id for r in screen.shown] == sorted(n for n in ALL if n.startswith("2020"))
        screen.query_one("#browse-table", DataTable).focus()
        await pilot.press("down", "enter")
        await settle(pilot)
        assert app.screen.query_one("#query", Input).value == str(photo_library.path("2020/b0.jpg"))
        hits = app.screen.query_one(ResultsList).hits
        assert str(photo_library.path("2020/b0.jpg")) in {str(h.path) for h in hits if h.score > 1 - 1e-5}
