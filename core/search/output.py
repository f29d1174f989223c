"""The JSON form of a search, shared by ``capsearch search --json`` and the HTTP service."""

from __future__ import annotations

from typing import Any

from core.data.records import ImageRecord
from core.directions import Direction
from core.search.retriever import Hit, Retriever


def search_json(
    retriever: Retriever,
    direction: Direction,
    query: str,
    k: int,
    hits: list[Hit],
    truth: tuple[ImageRecord, int] | None,
) -> dict[str, Any]:
    """The query, what searched it (model, dataset, split, index kind), the hits and the ground truth."""
    return {
        "query": query,
        "direction": direction.cli,
        "model_id": retriever.model_id,
        "dataset": retriever.dataset,
        "split": retriever.split,
        "index": retriever.index_kind_of(direction),
        "k": k,
        "hits": [hit.to_dict() for hit in hits],
        "ground_truth": {"id": truth[0].id, "rank": truth[1], "path": str(retriever.image_path(truth[0]))}
        if truth
        else None,
    }
