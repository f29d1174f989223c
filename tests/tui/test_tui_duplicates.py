"""The Duplicates screen on the real core: the tiny model over the small synthetic dataset."""

from __future__ import annotations

import numpy as np
import pytest
from pilot_helpers import settle
from textual.widgets import DataTable, Input, Label

from core.data.phash import file_fingerprint
from core.embed.cache import split_embeddings
from core.index.duplicates import find_duplicate_groups
from tui.screens.duplicates import DuplicatesScreen
from tui.widgets.image_preview import ImagePreview

pytestmark = pytest.mark.asyncio


def _threshold_for_a_few_groups(retriever) -> float:
    """A threshold just under the 8th most similar pair of the open split's images."""
    vectors = split_embeddings(retriever.lm, retriever.data, retriever.split).image_emb
    sims = vectors @ vectors.T
    upper = np.sort(sims[np.triu_indices(len(vectors), 1)])[::-1]
    return float(np.round(upper[7] - 1e-4, 4))


async def test_duplicates_screen_pages_through_the_groups(make_app, retriever) -> None:
    threshold = _threshold_for_a_few_groups(retriever)
    emb = split_embeddings(retriever.lm, retriever.data, retriever.split)
    prints = [file_fingerprint(retriever.data.image_path(r)) for r in emb.records]  # the default rule: pixels
    hashes, thumbs = [p.phash if p else None for p in prints], [p.thumb if p else None for p in prints]
    expected = find_duplicate_groups(emb.image_emb, [r.id for r in emb.records], threshold, hashes, thumbs)
    assert len(expected) >= 2
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f6")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, DuplicatesScreen)
        field = screen.query_one("#dup-threshold", Input)
        field.value = str(threshold)
        field.focus()
        await pilot.press("enter")
        await settle(pilot)
        table = screen.query_one("#dup-table", DataTable)
        assert table.row_count == len(expected)
        assert [g.ids for g in screen.found.groups] == [g.ids for g in expected]
        first = screen.query_one("#dup-preview-0", ImagePreview).path
        assert first == retriever.data.image_path(screen.found.records[expected[0].ids[0]])
        table.focus()
        await pilot.press("ctrl+n")
        await settle(pilot)
        second = screen.query_one("#dup-preview-0", ImagePreview).path
        assert second == retriever.data.image_path(screen.found.records[expected[1].ids[0]])
        shown = [
            screen.query_one(f"#dup-preview-{k}", ImagePreview).path for k in range(len(expected[1].ids))
        ]
        assert None not in shown
        assert "group 2/" in str(screen.query_one("#dup-status").render())


async def test_duplicates_screen_refuses_a_bad_threshold(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f6")
        await settle(pilot)
        field = app.screen.query_one("#dup-threshold", Input)
        field.value = "1.5"
        field.focus()
        await pilot.press("enter")
        await settle(pilot)
        assert any("not a similarity" in n.message for n in app._notifications)


async def test_duplicates_screen_on_a_library_shows_its_copies(photo_library) -> None:
    from tui.app import CapsearchApp
    from tui.session import Source

    app = CapsearchApp(Source(library="mine"), retriever=photo_library.retriever)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("f6")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, DuplicatesScreen)
        found = screen.found
        assert found is not None and found.images == 8
        copies = {str(photo_library.path("2020/b0.jpg")), str(photo_library.path("2020/b0 copy.jpg"))}
        assert [set(g.ids) for g in found.groups] == [copies]
        assert screen.query_one("#dup-table", DataTable).row_count == 1
        shown = [screen.query_one(f"#dup-preview-{k}", ImagePreview).path for k in range(2)]
        assert {str(p) for p in shown} == copies
        labels = {str(screen.query_one(f"#dup-label-{k}", Label).render()) for k in range(2)}
        assert labels == {"2020/b0.jpg", "2020/b0 copy.jpg"}  # relative to the library's folder
