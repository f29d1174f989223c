"""Evaluate screen: a run fills the metrics with the core's numbers, history, worst queries, the sweep."""

from __future__ import annotations

import json

import pytest
from pilot_helpers import notifications, settle
from textual.widgets import DataTable, Input

from tui.screens.evaluate import SWEEP_EF, EvaluateScreen, parse_ints
from tui.screens.search import SearchScreen
from tui.widgets.metrics_table import DIRECTION_LABELS, HistoryTable, MetricsTable, fmt
from tui.widgets.worst_queries import WorstQueriesTable


@pytest.mark.asyncio
async def test_an_evaluation_runs_to_completion_and_shows_the_cores_numbers(
    make_app, retriever, artifacts
) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        await pilot.press("ctrl+g")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, EvaluateScreen)
        assert screen.result is not None, notifications(app)
        saved = json.loads(screen.result_path.read_text(encoding="utf-8"))
        table = screen.query_one(MetricsTable)
        for direction in DIRECTION_LABELS:
            numbers = saved["metrics"]["exact"][direction]
            for k in saved["ks"]:
                assert table.cell_text("exact", direction, f"R@{k}") == fmt(numbers[f"R@{k}"])
            assert table.cell_text("exact", direction, "median_rank") == fmt(numbers["median_rank"])
            assert table.cell_text("exact", direction, "mean_rank") == fmt(numbers["mean_rank"])
        # the run is in the history table
        history = screen.query_one(HistoryTable)
        assert history.row_count == 1
        assert history.get_row_at(0)[1] == saved["model_id"]
        # the worst text→image query opens in Search, where its image has the same rank
        worst = screen.query_one(WorstQueriesTable)
        first = worst.queries[0]
        assert first.direction.label == "text → image"
        assert first.rank == max(screen.result.per_query["text_to_image"])
        assert first.caption in next(r for r in retriever.records if r.id == first.image_id).captions
        worst.move_cursor(row=0)
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert isinstance(app.screen, SearchScreen)
        assert app.screen.query_one("#query", Input).value == first.caption
        truth = f"ground truth {first.image_id} is at rank {first.rank}"
        assert truth in str(app.screen.query_one(".truth").render())
        # and the worst image→text query opens as an image query
        await pilot.press("f4")
        image_row = next(i for i, q in enumerate(worst.queries) if q.direction.label == "image → text")
        worst.move_cursor(row=image_row)
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert app.screen.query_one("#query", Input).value == worst.queries[image_row].image_id


@pytest.mark.asyncio
async def test_the_efsearch_sweep_fills_one_row_per_value_and_saves_nothing(make_app, artifacts) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        await pilot.press("ctrl+y")
        await settle(pilot)
        sweep = app.screen.query_one("#eval-sweep-table", DataTable)
        assert [sweep.get_row_at(i)[0] for i in range(sweep.row_count)] == [str(ef) for ef in SWEEP_EF]
        assert app.screen.query_one(HistoryTable).row_count == 0, "a sweep's evaluations are not saved"
        assert not list((artifacts / "results").glob("eval_*")), "a sweep writes no results files"


@pytest.mark.asyncio
async def test_malformed_settings_are_a_notification(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        app.screen.query_one("#eval-ks", Input).value = "1 five"
        await pilot.press("ctrl+g")
        await settle(pilot)
        (note,) = notifications(app)
        assert "K values" in note and "Next:" in note
        assert app.screen.reporter is None


def test_parse_ints() -> None:
    assert parse_ints("1, 5 10", "K values") == [1, 5, 10]
    with pytest.raises(Exception, match="K values"):
        parse_ints("0", "K values")


@pytest.mark.asyncio
async def test_every_registry_kind_is_offered_and_runs_with_its_knob(make_app, retriever, artifacts) -> None:
    from textual.widgets import Select

    from core.index.registry import CHOICES

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        select = app.screen.query_one("#eval-index", Select)
        assert [value for _, value in select._options if value != Select.BLANK] == [*CHOICES, "both"]
        select.value = "ivf-flat"
        app.screen.query_one("#eval-params", Input).value = "nlist=2, nprobe=2"
        await pilot.press("ctrl+g")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, EvaluateScreen) and screen.result is not None, notifications(app)
        saved = json.loads(screen.result_path.read_text(encoding="utf-8"))
        assert list(saved["metrics"]) == ["ivf-flat"]
        assert saved["index"]["ivf-flat"]["images"]["params"] == {"nlist": 2, "nprobe": 2}
        app.screen.query_one("#eval-params", Input).value = "nlist=2 nprobe=5"
        await pilot.press("ctrl+g")
        await settle(pilot)
        assert any("nprobe 5 exceeds nlist 2" in n for n in notifications(app)), notifications(app)


def test_parse_params() -> None:
    from tui.screens.evaluate import parse_params

    assert parse_params("ef_search=64, nprobe=8 target_recall=0.9") == {
        "ef_search": 64,
        "nprobe": 8,
        "target_recall": 0.9,
    }
    with pytest.raises(Exception, match="not name=number"):
        parse_params("ef_search")
