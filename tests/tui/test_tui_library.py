"""The app on a photo library: it opens the default library when one exists (not the demo), and the search
pane finds library files by text and by image, with their dates and cameras shown."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
from pilot_helpers import set_query, settle

from tui.app import CapsearchApp
from tui.session import Source
from tui.widgets.results_list import ResultRow, ResultsList

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from library_helpers import key_of, library_of, make_folder, write_photo  # noqa: E402

pytestmark = pytest.mark.asyncio


async def test_the_app_searches_the_default_library(tmp_path, artifacts, tiny_model, monkeypatch) -> None:
    photos = tmp_path / "photos"
    make_folder(photos, 6)
    write_photo(photos / "trip" / "beach.jpg", 3, exif_date="2018:08:09 10:11:12", camera="Pixel 7")
    lib, _ = library_of("mine", [photos], tiny_model)
    assert key_of(tiny_model) == lib.active
    lib.close()

    import tui.launch

    chosen: list[Source] = []
    monkeypatch.setattr(CapsearchApp, "run", lambda self: chosen.append(self.source))
    args = argparse.Namespace(
        dataset=None, model=None, pretrained=None, split="test", index="auto", preview=None
    )
    tui.launch.run_app(args)
    assert chosen == [Source(split="test", library="mine")]

    app = CapsearchApp(Source(library="mine"))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.retriever is not None and app.retriever.size == 7
        await set_query(pilot, "a beach")
        await settle(pilot)
        rows = [row.hit for row in app.screen.query(ResultRow) if row.hit is not None]
        assert len(rows) == 7
        beach = next(h for h in rows if h.path == photos / "trip" / "beach.jpg")
        assert beach.record.id == "trip/beach.jpg"
        assert beach.record.captions == ("2018-08-09 10:11 · Pixel 7",)


async def test_the_app_follows_a_library_another_process_updates(
    tmp_path, artifacts, tiny_model, monkeypatch
) -> None:
    """`library update` (or `--watch`) elsewhere: within a check the app searches the library as it is now
    (caught up in place; opened again for another index kind, the replaced searcher closed), the query runs
    again and its highlighted photo stays highlighted."""
    import tui.app
    from core.library.library import Library
    from core.library.update import update

    monkeypatch.setattr(tui.app, "LIBRARY_CHECK_S", 0.2)
    photos = tmp_path / "photos"
    make_folder(photos, 6)
    library_of("mine", [photos], tiny_model)[0].close()
    app = CapsearchApp(Source(library="mine"))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        first = app.retriever
        await set_query(pilot, "a red kite")
        await settle(pilot)
        await pilot.press("down", "down", "down")
        chosen = app.screen.query_one(ResultsList).highlighted
        assert chosen is not None and app.screen.query_one(ResultsList).list_view.index == 2
        await pilot.pause(0.5)
        assert app.retriever is first  # nothing changed: nothing reopened

        before = [row.hit.path for row in app.screen.query(ResultRow) if row.hit is not None]
        gone = next(path for path in before if path != chosen.path)
        gone.unlink()
        new = write_photo(photos / "new" / "kite.jpg", 99)
        with Library.open("mine") as lib:  # what another process's `library update` commits
            update(lib, tiny_model, key_of(tiny_model))
        for _ in range(50):
            await pilot.pause(0.1)
            if first.size == 6:
                break
        await settle(pilot)
        assert app.retriever is first and first.size == 6  # caught up in place
        shown = [row.hit.path for row in app.screen.query(ResultRow) if row.hit is not None]
        assert new in shown and gone not in shown
        assert app.screen.query_one(ResultsList).highlighted.path == chosen.path

        with Library.open("mine") as lib:  # another index kind cannot be caught up: opened again
            lib.set_index_kind("hnsw")
        for _ in range(50):
            await pilot.pause(0.1)
            if app.retriever is not first:
                break
        await settle(pilot)
        assert app.retriever is not first and app.retriever.index_kind == "hnsw"
        assert app.screen.query_one(ResultsList).highlighted.path == chosen.path
        with pytest.raises(Exception, match="closed"):
            first.searcher.lib.catalogue.generation  # noqa: B018
