"""Ranked search results: rank, score, caption or file name and a thumbnail per row.

Rows are a fixed pool reused for every search, so a new result set costs a text update rather than a
remount; thumbnails missing from the cache are decoded by one worker per result set (stale sets are
cancelled), so typing never waits for images.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image as PILImage
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import ListItem, ListView, Static

from core.safe_text import visible
from tui import thumbs
from tui.widgets.image_preview import ImagePreview, decode

if TYPE_CHECKING:
    from core.search.retriever import Hit

THUMB_CELLS = (8, 3)


class ResultRow(ListItem):
    """One ranked hit: thumbnail, then rank · score · id (✓ when it is the ground truth) and the caption."""

    DEFAULT_CSS = """
    ResultRow {
        layout: horizontal;
        height: 3;
        & ImagePreview { width: 8; height: 3; margin-right: 1; }
        & .row-text { width: 1fr; height: 3; }
        &.-truth .row-text { color: $text-success; }
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.hit: Hit | None = None

    def compose(self) -> ComposeResult:
        yield ImagePreview(classes="thumb")
        yield Static(classes="row-text")

    def show(self, hit: Hit | None, truth_id: str | None) -> None:
        self.hit = hit
        self.display = hit is not None
        self.disabled = hit is None
        if hit is None:
            return
        is_truth = truth_id is not None and hit.record.id == truth_id
        self.set_class(is_truth, "-truth")
        head = Text.assemble(
            (f"#{hit.rank:<3}", "bold"),
            (f" {hit.score:6.3f}  ", "dim"),
            (visible(hit.record.id), "bold" if hit.caption is None else ""),
            ("  ✓ ground truth" if is_truth else "", "bold"),
        )
        body = (
            hit.caption
            if hit.caption is not None
            else (hit.record.captions[0] if hit.record.captions else "")
        )
        text = Text.assemble(head, "\n", Text(visible(body)))
        text.no_wrap = False
        self.query_one(".row-text", Static).update(text)


class QueryCard(Horizontal):
    """The query image of an image search: its thumbnail and what it is."""

    DEFAULT_CSS = """
    QueryCard {
        height: 3;
        display: none;
        padding: 0 1;
        background: $boost;
        &.-shown { display: block; }
        & > ImagePreview { width: 8; height: 3; margin-right: 1; }
        & > Static { width: 1fr; height: 3; color: $text-muted; }
    }
    """

    def compose(self) -> ComposeResult:
        yield ImagePreview()
        yield Static()

    def show(self, image: tuple[Path, str] | None) -> None:
        """Show ``(path, description)`` of the query image, or hide the card for a text query."""
        self.set_class(image is not None, "-shown")
        if image is not None:
            path, description = image
            self.query_one(ImagePreview).show(path)
            self.query_one(Static).update(Text.assemble(("query image  ", "bold"), visible(description)))


class ResultsList(Vertical):
    """A summary line, the ground-truth line and the ranked rows."""

    DEFAULT_CSS = """
    ResultsList {
        height: 1fr;
        & > .summary { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
        & > .truth { height: auto; padding: 0 1; color: $text-success; display: none; }
        & > .truth.-shown { display: block; }
        & > ListView { height: 1fr; }
    }
    """

    class ThumbsLoaded(Message, bubble=False):
        def __init__(
            self, generation: int, images: list[tuple[int, Path, PILImage.Image | None, str]]
        ) -> None:
            super().__init__()
            self.generation = generation
            self.images = images

    def __init__(self, size: int = 20, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.capacity = size
        self.hits: list[Hit] = []
        self.truth_id: str | None = None
        self._generation = 0

    def compose(self) -> ComposeResult:
        yield Static("type a query to search", classes="summary")
        yield QueryCard()
        yield Static(classes="truth")
        yield ListView()  # rows are mounted with the first results (a lighter first paint), then reused

    @property
    def list_view(self) -> ListView:
        return self.query_one(ListView)

    @property
    def highlighted(self) -> Hit | None:
        index = self.list_view.index
        return self.hits[index] if index is not None and index < len(self.hits) else None

    def show_message(self, text: str) -> None:
        """Clear the results and say why (loading, nothing typed, an unknown image id)."""
        self.show_hits([], None, text)

    async def ensure_rows(self, count: int) -> None:
        """Mount rows until there are ``count`` (at most the capacity); rows are reused for later results."""
        view = self.list_view
        missing = min(count, self.capacity) - len(view.children)
        if missing > 0:
            await view.extend(ResultRow() for _ in range(missing))

    def show_hits(
        self,
        hits: list[Hit],
        truth: Any,
        summary: str,
        truth_id: str | None = None,
        query_image: tuple[Path, str] | None = None,
        keep: Path | None = None,
    ) -> None:
        """Show ``hits``, marking those of image ``truth_id``; ``query_image`` is (path, description); the
        hit of file ``keep`` stays highlighted where it still is (the same query answered again).

        ``truth`` is the retriever's ``(record, rank)`` when the query is one of the split's captions; its
        rank is shown even when it is below the fold. Rows beyond those mounted (:meth:`ensure_rows`) are
        not shown.
        """
        self._generation += 1
        self.hits = hits[: self.capacity]
        self.truth_id = truth_id
        self.query_one(".summary", Static).update(Text(summary))
        self.query_one(QueryCard).show(query_image)
        truth_line = self.query_one(".truth", Static)
        truth_line.set_class(truth is not None, "-shown")
        if truth is not None:
            record, rank = truth
            where = "shown below" if rank <= len(self.hits) else "below the fold"
            truth_line.update(Text(f"✓ ground truth {visible(record.id)} is at rank {rank} ({where})"))
        rows = list(self.query(ResultRow))
        missing: list[tuple[int, Path]] = []
        box = thumbs.box_for(*THUMB_CELLS)
        for i, row in enumerate(rows):
            hit = self.hits[i] if i < len(self.hits) else None
            row.show(hit, truth_id)
            if hit is None:
                continue
            preview = row.query_one(ImagePreview)
            image = thumbs.cached(hit.path, box)
            if image is not None:
                preview.set_image(hit.path, image)
            elif not (preview.path == hit.path and preview.has_class("-broken")):
                preview.set_image(hit.path, None, "…")
                missing.append((i, hit.path))
        view = self.list_view
        kept = next((i for i, hit in enumerate(self.hits) if keep is not None and hit.path == keep), None)
        if kept is not None:
            view.index = kept
        elif self.hits:
            view.index = 0
            view.scroll_home(animate=False)
        else:
            view.index = None
        if missing:
            # after the results are painted: decoding competes with the repaint for the interpreter
            self.call_after_refresh(self._load_thumbs, self._generation, missing, box)

    def _load_thumbs(self, generation: int, missing: list[tuple[int, Path]], box: tuple[int, int]) -> None:
        if generation == self._generation:  # else newer results were shown meanwhile
            self._decode_thumbs(generation, missing, box)

    @work(thread=True, exclusive=True, group="thumbs")
    def _decode_thumbs(self, generation: int, missing: list[tuple[int, Path]], box: tuple[int, int]) -> None:
        from textual.worker import get_current_worker

        worker = get_current_worker()
        batch: list[tuple[int, Path, PILImage.Image | None, str]] = []
        for i, path in missing:
            if worker.is_cancelled:
                return
            batch.append((i, path, *decode(path, box)))
            if len(batch) == 4:  # post in small batches: the visible rows appear first, one repaint each
                self.post_message(self.ThumbsLoaded(generation, batch))
                batch = []
        if batch:
            self.post_message(self.ThumbsLoaded(generation, batch))

    def on_results_list_thumbs_loaded(self, message: ThumbsLoaded) -> None:
        if message.generation != self._generation:
            return
        rows = list(self.query(ResultRow))
        for i, path, image, note in message.images:
            rows[i].query_one(ImagePreview).set_image(path, image, note)
