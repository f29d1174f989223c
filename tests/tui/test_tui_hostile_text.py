"""Captions, file names and queries with terminal escapes or Rich markup are shown, never obeyed (C3)."""

from __future__ import annotations

import json

import pytest
from fixed_data import FixedRetriever
from PIL import Image
from pilot_helpers import set_query, settle
from rich.text import Text
from textual.widgets import DataTable, Static

from core.data.records import load_dataset
from tui.app import CapsearchApp
from tui.session import Source
from tui.widgets.detail_pane import DetailPane
from tui.widgets.results_list import ResultsList

ESCAPES = "\x1b[2J\x1b]0;owned\x07\x1b]8;;http://evil.example/\x1b\\"
MARKUP = "[link=http://evil.example]click[/link][reverse]"

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    from core.data.prepare import prepare_folder

    src = tmp_path_factory.mktemp("hostile")
    rows = []
    for i in range(6):
        name = f"img{i}\x1b[31m.png" if i % 2 else f"img{i}[b].png"
        Image.new("RGB", (32, 32), (40 * i, 90, 200 - 30 * i)).save(src / name)
        rows.append({"image": name, "captions": [f"a dog {ESCAPES} {MARKUP} number {i}"]})
    (src / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    data = prepare_folder(src, captions=src / "captions.jsonl", ratios=(0, 0, 1), seed=0, name="hostile")
    return Source(dataset=str(data.dir), model="capsearch-tiny", split="test", index="exact")


def shown_text(app: CapsearchApp) -> str:
    parts = [str(w.render()) for w in app.screen.query(Static)]
    for table in app.screen.query(DataTable):
        cells = [cell for row in range(table.row_count) for cell in table.get_row_at(row)]
        parts += [Text.from_markup(c).plain if isinstance(c, str) else str(c) for c in cells]  # as drawn
    return "\n".join(parts)


async def test_hostile_captions_and_names_are_escaped_in_results_and_detail(hostile) -> None:
    retriever = FixedRetriever(load_dataset(hostile.dataset), "test")
    app = CapsearchApp(source=hostile, retriever=retriever)
    async with app.run_test(size=(120, 40)) as pilot:
        await set_query(pilot, f"dog {ESCAPES} {MARKUP}")
        await settle(pilot)
        await pilot.press("down")
        await settle(pilot)
        text = shown_text(app)
        assert "number" in text  # the captions are on screen
        assert "\x1b" not in text and "\x07" not in text
        assert "\\x1b[2J" in text and "\\x1b]0;owned\\x07" in text
        assert "[link=http://evil.example]click[/link]" in text
        assert app.screen.query_one(DetailPane) and app.screen.query_one(ResultsList)
        await pilot.press("f3")
        await settle(pilot)
        text = shown_text(app)
        assert "img1\\x1b[31m" in text and "img0[b]" in text and "\x1b" not in text
