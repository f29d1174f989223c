"""Near-duplicate groups among L2-normalised vectors: FAISS range search, then grouping without chaining.

Candidate pairs come from ``IndexFlatIP.range_search`` (exact inner products, i.e. cosine similarities of
unit vectors, above ``threshold``). clip-retrieval groups them by connected components, which chains: A~B
and B~C put A and C together even when A and C are unrelated (a photo, its crop, a different photo
framed like the crop...). Here a group is a *clique*: every two members are within the threshold of each
other. Groups are grown by complete linkage over the sparse candidate graph: pairs are visited from the
most to the least similar, and two groups merge only when every cross pair is itself a candidate pair. The
most similar pairs therefore group first and an intermediate can never join two photos that are not
near-identical themselves. The default threshold (:mod:`core.near_duplicates`) was measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import faiss
import numpy as np

from core.near_duplicates import DEFAULT_THRESHOLD

QUERY_BATCH = 4096

H = TypeVar("H")


@dataclass(frozen=True)
class DuplicateGroup:
    """Near-identical items: their ids and rows, the representative (highest mean similarity to the
    others, listed first) and the lowest and highest pairwise similarity inside the group."""

    ids: list[str]
    rows: list[int]
    min_similarity: float
    max_similarity: float

    @property
    def representative(self) -> str:
        return self.ids[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ids": self.ids,
            "min_similarity": round(self.min_similarity, 6),
            "max_similarity": round(self.max_similarity, 6),
        }


def similar_pairs(vectors: np.ndarray, threshold: float) -> dict[tuple[int, int], float]:
    """Every pair ``(i, j)`` with ``i < j`` whose inner product exceeds ``threshold``, with its score."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(matrix.shape[1])
    index.add(matrix)
    pairs: dict[tuple[int, int], float] = {}
    for start in range(0, len(matrix), QUERY_BATCH):
        batch = matrix[start : start + QUERY_BATCH]
        lims, scores, found = index.range_search(batch, float(threshold))
        queries = np.repeat(np.arange(start, start + len(batch)), np.diff(lims).astype(np.int64))
        keep = found > queries
        for i, j, s in zip(queries[keep].tolist(), found[keep].tolist(), scores[keep].tolist(), strict=True):
            pairs[(i, j)] = s
    return pairs


def _cliques(pairs: dict[tuple[int, int], float]) -> list[list[int]]:
    """Complete-linkage groups: merge along pairs by falling similarity while every cross pair exists."""
    group_of: dict[int, list[int]] = {}
    for (i, j), _ in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0])):
        a, b = group_of.get(i, [i]), group_of.get(j, [j])
        if a is b:
            continue
        if all((min(x, y), max(x, y)) in pairs for x in a for y in b):
            merged = a + b
            for member in merged:
                group_of[member] = merged
    unique = {id(g): g for g in group_of.values()}
    return [sorted(g) for g in unique.values()]


def _describe(rows: list[int], ids: Sequence[str], pairs: dict[tuple[int, int], float]) -> DuplicateGroup:
    def sim(x: int, y: int) -> float:
        return pairs[(min(x, y), max(x, y))]

    mean = {r: sum(sim(r, o) for o in rows if o != r) / (len(rows) - 1) for r in rows}
    ordered = sorted(rows, key=lambda r: (-mean[r], r))
    inner = [sim(x, y) for k, x in enumerate(rows) for y in rows[k + 1 :]]
    return DuplicateGroup([ids[r] for r in ordered], ordered, min(inner), max(inner))


def find_duplicate_groups(
    vectors: np.ndarray, ids: Sequence[str], threshold: float = DEFAULT_THRESHOLD
) -> list[DuplicateGroup]:
    """Groups of two or more near-identical items (every pair's cosine similarity above ``threshold``),
    largest first, then most similar first. ``vectors`` are L2-normalised rows aligned with ``ids``."""
    if len(vectors) != len(ids):
        raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold} is not a cosine similarity in [-1, 1]")
    if len(vectors) < 2:
        return []
    pairs = similar_pairs(vectors, threshold)
    groups = [_describe(rows, ids, pairs) for rows in _cliques(pairs)]
    return sorted(groups, key=lambda g: (-len(g.ids), -g.max_similarity, g.rows[0]))


def _hit_id(hit: Any) -> str:
    return str(hit.record.id)


def _hit_score(hit: Any) -> float:
    return float(hit.score)


def collapse_duplicates(
    hits: Sequence[H],
    groups: Sequence[DuplicateGroup],
    key: Callable[[H], str] = _hit_id,
    score: Callable[[H], float] = _hit_score,
) -> list[H]:
    """``hits`` with only the best-scored member of each duplicate group kept (order otherwise kept).
    ``key`` gives a hit's id (default ``hit.record.id``), ``score`` its score (default ``hit.score``)."""
    group_of = {member: k for k, g in enumerate(groups) for member in g.ids}
    best: dict[int, int] = {}
    for n, hit in enumerate(hits):
        k = group_of.get(key(hit))
        if k is not None and (k not in best or score(hit) > score(hits[best[k]])):
            best[k] = n
    keep = set(best.values())
    return [h for n, h in enumerate(hits) if group_of.get(key(h)) is None or n in keep]
