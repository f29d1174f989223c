"""The worst queries of an evaluation: those whose correct item ranked lowest, per direction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.data.records import ImageRecord
from core.directions import Direction
from core.evaluation.results import EvalResult
from core.index.split_indexes import caption_numbers


@dataclass(frozen=True)
class WorstQuery:
    direction: Direction
    rank: int
    image_id: str
    path: Path
    caption: str
    """The query caption ('' for an image query)."""


def worst_queries(
    result: EvalResult,
    records: list[ImageRecord],
    image_path: Callable[[ImageRecord], Path],
    per_direction: int,
) -> list[WorstQuery]:
    """``per_direction`` worst queries of each direction of ``result``'s primary index, worst first.

    ``records`` are the evaluated split's records in order: caption row ``j`` is caption ``n`` of image
    ``caption_image[j]`` (:func:`~core.index.split_indexes.caption_numbers`); image queries are the
    records (rank 0: no captions, not a query).
    """
    ranks = result.ranks[result.primary]
    rows = result.caption_image.tolist()
    text_rows = []
    for j, (row, n, rank) in enumerate(
        zip(rows, caption_numbers(result.caption_image), ranks.text_to_image.tolist(), strict=True)
    ):
        record = records[row]
        caption = record.captions[n] if n < len(record.captions) else f"caption {j}"
        text_rows.append(
            WorstQuery(Direction.TEXT_TO_IMAGE, int(rank), record.id, image_path(record), caption)
        )
    image_rows = [
        WorstQuery(Direction.IMAGE_TO_TEXT, int(rank), records[i].id, image_path(records[i]), "")
        for i, rank in enumerate(ranks.image_to_text.tolist())
        if rank > 0
    ]
    worst: list[WorstQuery] = []
    for queries in (text_rows, image_rows):
        queries.sort(key=lambda q: -q.rank)
        worst += queries[:per_direction]
    return worst
