"""Render every screen of the terminal app to SVG and PNG for the README.

Runs the real app headless (``App.run_test``) on a real dataset and model, drives each screen as a user
would, saves an SVG screenshot and converts it with ``rsvg-convert`` (``apt-get install librsvg2-bin``).

    .venv/bin/python scripts/render_screens.py                      # the built-in demo
    .venv/bin/python scripts/render_screens.py --dataset flickr8k --model artifacts/models/<name>

Output: ``<artifacts>/reports/screens/{search,search-image,browse,evaluate,finetune,help,duplicates}<suffix>.png`` (``--svg``
keeps the SVGs beside them). The evaluation and the short fine-tune it shows write their usual outputs
under the artifacts root: point ``CAPSEARCH_ARTIFACTS`` at a scratch folder and pass ``--dataset`` and
``--model`` paths to keep the real one clean.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from textual.pilot import Pilot  # noqa: E402
from textual.widgets import Input  # noqa: E402

from core.cli.console import RichReporter  # noqa: E402
from core.paths import models_dir, reports_dir  # noqa: E402
from tui.app import CapsearchApp  # noqa: E402
from tui.session import Source, open_retriever  # noqa: E402

Step = Callable[[Pilot], Awaitable[None]]
SCREENSHOT_MODEL = "ft-screenshot"


async def settle(pilot: Pilot, timeout: float = 600.0) -> None:
    """Wait for debounce timers, workers and the messages they post."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        await pilot.pause(0.1)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        if not any(w.is_running for w in pilot.app.workers):
            break
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False
    pilot.app.clear_notifications()
    await pilot.pause()


def scenes(query: str, image_id: str, threshold: str | None = None) -> dict[str, Step]:
    async def search(pilot: Pilot) -> None:
        pilot.app.screen.use_text(query)
        await settle(pilot)
        await pilot.press("down", "down")

    async def search_image(pilot: Pilot) -> None:
        await pilot.press("ctrl+t")
        pilot.app.screen.use_image(image_id)

    async def browse(pilot: Pilot) -> None:
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("down", "down", "down")

    async def evaluate(pilot: Pilot) -> None:
        await pilot.press("f4", "ctrl+g")

    async def finetune(pilot: Pilot) -> None:
        """A short fine-tune of the open model, captured after its first validation, then cancelled."""
        await pilot.press("f5")
        screen = pilot.app.screen
        screen.query_one("#ft-epochs", Input).value = "2"
        screen.query_one("#ft-name", Input).value = SCREENSHOT_MODEL
        await pilot.press("ctrl+g")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 900
        while not screen.val_points and screen.reporter is not None and loop.time() < deadline:
            await pilot.pause(0.5)
        for widget in screen.query(Input):
            widget.cursor_blink = False
        pilot.app.clear_notifications()
        await pilot.pause()

    async def help_screen(pilot: Pilot) -> None:
        await pilot.press("f1")

    async def duplicates(pilot: Pilot) -> None:
        await pilot.press("f6")
        await settle(pilot)
        if threshold is not None:
            pilot.app.screen.query_one("#dup-threshold", Input).value = threshold
            pilot.app.screen.action_find()
            await settle(pilot)
        pilot.app.screen.query_one("#dup-table").focus()

    return {
        "search": search,
        "search-image": search_image,
        "browse": browse,
        "evaluate": evaluate,
        "finetune": finetune,
        "help": help_screen,
        "duplicates": duplicates,
    }


async def render(source: Source, retriever, name: str, step: Step, size: tuple[int, int], out: Path) -> Path:
    app = CapsearchApp(source=source, retriever=retriever)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await step(pilot)
        if name != "finetune":  # captured while it trains
            await settle(pilot)
        svg = out / f"{name}.svg"
        app.save_screenshot(filename=svg.name, path=str(out))
        if app.workers:  # stop a fine-tune still running
            await pilot.press("escape")
            await settle(pilot)
    shutil.rmtree(models_dir() / SCREENSHOT_MODEL, ignore_errors=True)  # the screenshot's run leaves nothing
    return svg


def _open(args: argparse.Namespace, reporter: RichReporter) -> tuple[Source, Any]:
    """The source the screens show and its retriever: a library, else a dataset split."""
    if args.library:
        from tui.library_session import open_library

        return Source(library=args.library), open_library(args.library, reporter)
    from tui.session import resolve

    dataset, model = resolve(Source(dataset=args.dataset, model=args.model), reporter)
    source = Source(dataset=dataset, model=model, pretrained=args.pretrained, split=args.split)
    return source, open_retriever(source, reporter)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", help="prepared dataset name or folder (default: the demo)")
    parser.add_argument("--library", help="a photo library to open instead of a dataset")
    parser.add_argument("--model", help="model name or checkpoint folder (default: the demo model)")
    parser.add_argument("--pretrained")
    parser.add_argument("--split", default="test")
    parser.add_argument("--query", help="text query for the search screen (default: a caption of the split)")
    parser.add_argument("--size", default="120x40", help="terminal size, COLSxROWS (default: 120x40)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: reports/screens)")
    parser.add_argument("--only", nargs="*", help="render only these screens")
    parser.add_argument("--svg", action="store_true", help="keep the SVG screenshots next to the PNGs")
    parser.add_argument("--suffix", default="", help="appended to each file name (e.g. -flickr8k)")
    parser.add_argument("--threshold", help="the Duplicates screen's threshold (default: the screen's)")
    args = parser.parse_args()

    rsvg = shutil.which("rsvg-convert")
    if rsvg is None:
        print("rsvg-convert not found: apt-get install -y librsvg2-bin", file=sys.stderr)
        return 2
    cols, rows = (int(v) for v in args.size.lower().split("x"))
    out = args.out or reports_dir() / "screens"
    out.mkdir(parents=True, exist_ok=True)

    with RichReporter() as reporter:
        source, retriever = _open(args, reporter)
    records = retriever.records
    query = args.query or next((c for r in records[len(records) // 3 :] for c in r.captions), "a dog")
    image_id = records[len(records) // 2].id if records else ""

    for name, step in scenes(query, image_id, args.threshold).items():
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            svg = asyncio.run(
                render(source, retriever, name, step, (cols, rows), out if args.svg else Path(tmp))
            )
            png = out / f"{name}{args.suffix}.png"
            subprocess.run([rsvg, "--zoom", "1.0", str(svg), "-o", str(png)], check=True)
        print(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
