"""Near-duplicate groups: candidate pairs from FAISS range searches, then grouping without chaining.

Two signals find candidate pairs. Embeddings: ``IndexFlatIP.range_search`` (exact inner products, i.e.
cosine similarities of unit vectors). Pixels: 64-bit perceptual hashes (:mod:`core.data.phash`) and
``IndexBinaryFlat.range_search`` (exact Hamming distances). Embeddings tolerate crops and tone shifts but
are texture-sensitive: a half-size or low-quality JPEG copy of a small photo can fall well below any safe
threshold. Perceptual hashes are the reverse: blind to scale and compression, moved by crops, and colour-
blind, so unrelated photos with one layout collide. Where thumbnails are at hand, a pixel check
(:mod:`core.data.pixel_match`) settles every pair within a wide hash distance: it tolerates crops and tells
colours apart. A :class:`DuplicateRule` says which (similarity, distance, pixel match) pairs are
near-duplicates.

clip-retrieval groups pairs by connected components, which chains: A~B and B~C put A and C together even
when A and C are unrelated (a photo, its crop, a different photo framed like the crop...). Here a group is a
*clique*: every two members are near-duplicates of each other. Groups are grown by complete linkage over the
sparse pair graph: pairs are visited from the closest to the least close, and two groups merge only when
every cross pair is itself a near-duplicate pair, so an intermediate never joins two photos that are not
near-identical themselves. The default rule (:mod:`core.near_duplicates`) was measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import faiss
import numpy as np

from core.data.phash import HASH_BITS, hash_matrix
from core.data.pixel_match import pixel_scores
from core.errors import CapsearchError
from core.near_duplicates import (
    DEFAULT_HASH_DISTANCE,
    DEFAULT_THRESHOLD,
    LOOSE_HASH_DISTANCE,
    LOOSE_THRESHOLD,
    PIXEL_HASH_DISTANCE,
    PIXEL_THRESHOLD,
)

QUERY_BATCH = 4096
MAX_PAIRS_PER_ITEM = 50  # more candidate pairs than this per item: the model does not tell the images apart
NO_HASH = HASH_BITS + 1  # the distance of a pair in which an image has no hash: never within any rule

H = TypeVar("H")


class TooManyPairsError(CapsearchError):
    """So many pairs are within the threshold that the embeddings cannot be telling the images apart."""


@dataclass(frozen=True)
class DuplicateRule:
    """A pair is a near-duplicate when its cosine similarity reaches ``threshold``, or its hashes are at most
    ``hash_distance`` bits apart, or both hold loosely (``loose_hash_distance`` and ``loose_threshold``).
    When both images have thumbnails, the hash clauses give way to a pixel check: hashes at most
    ``pixel_hash_distance`` bits apart and a pixel match of at least ``pixel_threshold``. A negative
    distance turns its clause off; without hashes only ``threshold`` applies."""

    threshold: float = DEFAULT_THRESHOLD
    hash_distance: int = DEFAULT_HASH_DISTANCE
    loose_hash_distance: int = LOOSE_HASH_DISTANCE
    loose_threshold: float = LOOSE_THRESHOLD
    pixel_threshold: float = PIXEL_THRESHOLD
    pixel_hash_distance: int = PIXEL_HASH_DISTANCE

    def __post_init__(self) -> None:
        for sim in (self.threshold, self.loose_threshold, self.pixel_threshold):
            if not -1.0 <= sim <= 1.0:
                raise ValueError(f"threshold {sim} is not a cosine similarity in [-1, 1]")
        for bits in (self.hash_distance, self.loose_hash_distance, self.pixel_hash_distance):
            if bits > HASH_BITS:
                raise ValueError(f"hash distance {bits} is more than the hash's {HASH_BITS} bits")

    @property
    def max_distance(self) -> int:
        """The largest hash distance any clause accepts (-1: none)."""
        return max(self.hash_distance, self.loose_hash_distance, self.pixel_hash_distance)

    def accepts(
        self, similarity: np.ndarray, distance: np.ndarray, pixel: np.ndarray | None = None
    ) -> np.ndarray:
        """A mask of the pairs (their similarities, hash distances and pixel matches, NaN where unchecked)
        that are near-duplicates."""
        by_hash = (distance <= self.hash_distance) | (
            (distance <= self.loose_hash_distance) & (similarity >= self.loose_threshold)
        )
        if pixel is not None:
            checked = (distance <= self.pixel_hash_distance) & np.isfinite(pixel)
            by_pixels = checked & (np.nan_to_num(pixel, nan=-1.0) >= self.pixel_threshold)
            by_hash = np.where(checked, by_pixels, by_hash)
        return (similarity >= self.threshold) | by_hash

    def to_dict(self) -> dict[str, float | int]:
        return {
            "threshold": self.threshold,
            "hash_distance": self.hash_distance,
            "loose_hash_distance": self.loose_hash_distance,
            "loose_threshold": self.loose_threshold,
            "pixel_threshold": self.pixel_threshold,
            "pixel_hash_distance": self.pixel_hash_distance,
        }


@dataclass(frozen=True)
class Pairs:
    """Candidate pairs ``i[k] < j[k]`` with their cosine similarity, hash distance (NO_HASH if unknown) and
    pixel match (NaN where not checked)."""

    i: np.ndarray
    j: np.ndarray
    similarity: np.ndarray
    distance: np.ndarray
    pixel: np.ndarray

    def where(self, mask: np.ndarray) -> Pairs:
        return Pairs(self.i[mask], self.j[mask], self.similarity[mask], self.distance[mask], self.pixel[mask])

    def accepted(self, rule: DuplicateRule) -> Pairs:
        """The pairs ``rule`` calls near-duplicates."""
        return self.where(rule.accepts(self.similarity, self.distance, self.pixel))

    def __len__(self) -> int:
        return len(self.i)


@dataclass(frozen=True)
class DuplicateGroup:
    """Near-identical items: their ids and rows, the representative (the closest to the others, listed
    first), the lowest and highest pairwise similarity inside the group and, with hashes, the largest
    hash distance between two members."""

    ids: list[str]
    rows: list[int]
    min_similarity: float
    max_similarity: float
    max_hash_distance: int | None = None

    @property
    def representative(self) -> str:
        return self.ids[0]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ids": self.ids,
            "min_similarity": round(self.min_similarity, 6),
            "max_similarity": round(self.max_similarity, 6),
        }
        if self.max_hash_distance is not None:
            out["max_hash_distance"] = self.max_hash_distance
        return out


def _similar_rows(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``(i, j)``, ``i < j``, whose inner product reaches ``threshold``."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    found_i, found_j, limit = [], [], MAX_PAIRS_PER_ITEM * len(vectors)
    for start in range(0, len(vectors), QUERY_BATCH):
        batch = vectors[start : start + QUERY_BATCH]
        lims, _, found = index.range_search(batch, float(np.nextafter(np.float32(threshold), -2)))
        queries = np.repeat(np.arange(start, start + len(batch)), np.diff(lims).astype(np.int64))
        keep = found > queries
        found_i.append(queries[keep])
        found_j.append(found[keep])
        if sum(len(f) for f in found_i) > limit:
            raise TooManyPairsError(
                f"more than {limit:,} pairs of the {len(vectors):,} images embed within similarity "
                f"{threshold:g} of each other: this model does not tell them apart at that threshold",
                hint="raise the threshold, or embed with a trained model",
            )
    return np.concatenate(found_i).astype(np.int64), np.concatenate(found_j).astype(np.int64)


def _close_hashes(
    packed: np.ndarray, present: np.ndarray, max_distance: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``(i, j)``, ``i < j``, both hashed, whose hashes are at most ``max_distance`` bits apart."""
    rows = np.flatnonzero(present)
    if max_distance < 0 or len(rows) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    index = faiss.IndexBinaryFlat(HASH_BITS)
    index.add(np.ascontiguousarray(packed[rows]))
    lims, _, found = index.range_search(np.ascontiguousarray(packed[rows]), max_distance + 1)  # radius: <
    queries = np.repeat(np.arange(len(rows)), np.diff(lims).astype(np.int64))
    keep = found > queries
    return rows[queries[keep]], rows[found[keep]]


def candidate_pairs(
    vectors: np.ndarray,
    hashes: Sequence[str | None] | None,
    min_similarity: float,
    max_distance: int,
    thumbs: Sequence[bytes | None] | None = None,
    pixel_distance: int = -1,
) -> Pairs:
    """Every pair with similarity at least ``min_similarity`` or hash distance at most ``max_distance``,
    with both measures (hashes: 16 hex digits or None per row; None for no hashes at all), and the pixel
    match of those within ``pixel_distance`` whose rows both have ``thumbs``."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    packed, present = hash_matrix(hashes if hashes is not None else [None] * len(matrix))
    ei, ej = _similar_rows(matrix, min_similarity)
    hi, hj = _close_hashes(packed, present, max_distance)
    keys = np.unique(np.concatenate([ei, hi]) * len(matrix) + np.concatenate([ej, hj]))
    i, j = keys // max(len(matrix), 1), keys % max(len(matrix), 1)
    similarity = np.einsum("kd,kd->k", matrix[i], matrix[j])
    distance = np.unpackbits(packed[i] ^ packed[j], axis=1).sum(axis=1).astype(np.int64)
    distance[~(present[i] & present[j])] = NO_HASH
    pixel = np.full(len(i), np.nan, np.float32)
    if thumbs is not None:
        near = np.flatnonzero(distance <= pixel_distance)
        pixel[near] = pixel_scores(thumbs, i[near], j[near])
    return Pairs(i, j, similarity, distance, pixel)


def _closeness(pairs: Pairs) -> np.ndarray:
    """How near-identical each pair is: its similarity, its hashes' share of equal bits and its pixel match."""
    bits = np.clip(1.0 - pairs.distance / HASH_BITS, 0.0, 1.0)
    return pairs.similarity + bits + np.nan_to_num(pairs.pixel, nan=0.0)


def _cliques(pairs: Pairs) -> list[list[int]]:
    """Complete-linkage groups: merge along pairs from the closest while every cross pair is a pair."""
    linked = set(zip(pairs.i.tolist(), pairs.j.tolist(), strict=True))
    order = np.lexsort((pairs.j, pairs.i, -_closeness(pairs)))
    group_of: dict[int, list[int]] = {}
    for i, j in zip(pairs.i[order].tolist(), pairs.j[order].tolist(), strict=True):
        a, b = group_of.get(i, [i]), group_of.get(j, [j])
        if a is b:
            continue
        if all((min(x, y), max(x, y)) in linked for x in a for y in b):
            merged = a + b
            for member in merged:
                group_of[member] = merged
    unique = {id(g): g for g in group_of.values()}
    return [sorted(g) for g in unique.values()]


def _describe(
    rows: list[int], ids: Sequence[str], pairs: dict[tuple[int, int], tuple[float, int]]
) -> DuplicateGroup:
    def of(x: int, y: int) -> tuple[float, int]:
        return pairs[(min(x, y), max(x, y))]

    def close(x: int, y: int) -> float:
        sim, dist = of(x, y)
        return sim + max(0.0, 1.0 - dist / HASH_BITS)

    mean = {r: sum(close(r, o) for o in rows if o != r) / (len(rows) - 1) for r in rows}
    ordered = sorted(rows, key=lambda r: (-mean[r], r))
    inner = [of(x, y) for k, x in enumerate(rows) for y in rows[k + 1 :]]
    sims, dists = [s for s, _ in inner], [d for _, d in inner]
    hashed = max(dists) if max(dists) < NO_HASH else None
    return DuplicateGroup([ids[r] for r in ordered], ordered, min(sims), max(sims), hashed)


def group_pairs(pairs: Pairs, ids: Sequence[str]) -> list[DuplicateGroup]:
    """The clique groups of near-duplicate ``pairs`` (already filtered by a rule), largest first, then
    closest first."""
    lookup = {
        (i, j): (s, d)
        for i, j, s, d in zip(
            pairs.i.tolist(),
            pairs.j.tolist(),
            pairs.similarity.tolist(),
            pairs.distance.tolist(),
            strict=True,
        )
    }
    groups = [_describe(rows, ids, lookup) for rows in _cliques(pairs)]
    return sorted(groups, key=lambda g: (-len(g.ids), -g.max_similarity, g.rows[0]))


def find_duplicate_groups(
    vectors: np.ndarray,
    ids: Sequence[str],
    rule: DuplicateRule | float = DEFAULT_THRESHOLD,
    hashes: Sequence[str | None] | None = None,
    thumbs: Sequence[bytes | None] | None = None,
) -> list[DuplicateGroup]:
    """Groups of two or more near-identical items (every two members a near-duplicate pair under
    ``rule``), largest first, then most similar first. ``vectors`` are L2-normalised rows aligned with
    ``ids``; ``hashes`` their perceptual hashes (or None: embeddings only) and ``thumbs`` their pixel-check
    thumbnails (or None: hashes unchecked). A float ``rule`` is a similarity threshold with the default
    hash and pixel clauses."""
    for name, column in (("hashes", hashes), ("thumbnails", thumbs)):
        if column is not None and len(column) != len(ids):
            raise ValueError(f"{len(column)} {name} but {len(ids)} ids")
    if len(vectors) != len(ids):
        raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
    if not isinstance(rule, DuplicateRule):
        rule = DuplicateRule(threshold=float(rule))
    if len(vectors) < 2:
        return []
    pairs = candidate_pairs(  # loose pairs: by hash
        vectors, hashes, rule.threshold, rule.max_distance, thumbs, rule.pixel_hash_distance
    )
    return group_pairs(pairs.accepted(rule), ids)


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
