"""The selected image in detail: a large preview, its id and path, the score, and all its captions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from core.safe_text import visible
from tui.widgets.image_preview import ImagePreview

if TYPE_CHECKING:
    from core.data.records import ImageRecord


class DetailPane(Vertical):
    """Large preview on top, facts and captions below (scrollable)."""

    DEFAULT_CSS = """
    DetailPane {
        & > ImagePreview { height: 3fr; min-height: 4; }
        & > VerticalScroll { height: 2fr; min-height: 3; padding: 0 1; }
    }
    """

    def compose(self) -> ComposeResult:
        yield ImagePreview(empty="select a result to see it here", id="detail-image")
        with VerticalScroll():
            yield Static(id="detail-text")

    def show(
        self,
        record: ImageRecord | None,
        path: Path | None,
        *,
        rank: int | None = None,
        score: float | None = None,
        caption: str | None = None,
        is_truth: bool = False,
    ) -> None:
        """Show ``record`` (None clears); ``caption`` is the caption that matched, marked among the others."""
        self.query_one(ImagePreview).show(path)
        text = Text()
        if record is not None:
            text.append(visible(record.id), "bold")
            if is_truth:
                text.append("  ✓ ground truth", "bold green")
            text.append("\n")
            if rank is not None and score is not None:
                text.append(f"rank {rank} · score {score:.4f}\n", "dim")
            text.append(f"{visible(path)}\n", "dim")
            if record.captions:
                for i, line in enumerate(record.captions, 1):
                    style = "bold" if caption is not None and line == caption else ""
                    text.append(f"{i}. {visible(line)}\n", style)
            else:
                text.append("(no captions)\n", "dim italic")
        self.query_one("#detail-text", Static).update(text)
