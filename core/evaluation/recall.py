"""Recall@K and ranks for image <-> text retrieval with the standard multi-caption protocol.

As in CLIP_benchmark: every caption is a text->image query whose one correct image is the image it
describes; every image that has captions is an image->text query, correct when *any* of its captions is
retrieved. A query's rank is the 1-based rank of its first correct item.

Ties are broken pessimistically: a wrong item scoring exactly as high as the best correct item is ranked
before it, i.e. ``rank = 1 + #(wrong items with score >= best correct score)``. An implementation-defined
tie order (``argsort``, ``topk``) could otherwise hand a degenerate model (all-equal embeddings, zero rows
of failed images) a perfect score; with this rule such a model gets the worst rank instead.

Ranks come either from the full similarity matrix, computed in chunks (:func:`exact_ranks`), or from a
top-``depth`` search function such as an HNSW index (:func:`search_ranks`); then ranks beyond ``depth`` are
unknown ("censored") and stored as ``depth + 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.directions import EVALUATED

Metrics = dict[str, dict[str, float | None]]
SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
CHUNK_ELEMENTS = 1 << 24  # similarity-matrix entries computed at once (64 MiB of float32)


@dataclass
class Ranks:
    """Per-query ranks (1-based) in both directions.

    ``text_to_image[c]`` is the rank of caption ``c``'s image. ``image_to_text[i]`` is the rank of image
    ``i``'s first correct caption, 0 for an image without captions (not a query). With ``depth`` set, ranks
    above it are unknown and stored as ``depth + 1``.
    """

    text_to_image: np.ndarray
    image_to_text: np.ndarray
    depth: int | None = None

    def to_dict(self) -> dict[str, list[int]]:
        return {"text_to_image": self.text_to_image.tolist(), "image_to_text": self.image_to_text.tolist()}


def _check(image_emb: np.ndarray, caption_emb: np.ndarray, caption_image: np.ndarray) -> np.ndarray:
    if image_emb.ndim != 2 or caption_emb.ndim != 2 or image_emb.shape[1] != caption_emb.shape[1]:
        raise ValueError(
            f"embedding shapes {image_emb.shape} and {caption_emb.shape} are not [n, d] and [m, d]"
        )
    caption_image = np.asarray(caption_image, dtype=np.int64)
    if caption_image.shape != (len(caption_emb),):
        raise ValueError(f"caption_image has shape {caption_image.shape}, expected ({len(caption_emb)},)")
    if len(caption_image) and (caption_image.min() < 0 or caption_image.max() >= len(image_emb)):
        raise ValueError("caption_image holds an index outside the images")
    return caption_image


def exact_ranks(
    image_emb: np.ndarray,
    caption_emb: np.ndarray,
    caption_image: np.ndarray,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> Ranks:
    """Exact ranks from inner-product similarities, computed in row chunks of at most ``chunk_elements``."""
    image_emb = np.asarray(image_emb, dtype=np.float32)
    caption_emb = np.asarray(caption_emb, dtype=np.float32)
    caption_image = _check(image_emb, caption_emb, caption_image)
    n_img, n_cap = len(image_emb), len(caption_emb)

    t2i = np.empty(n_cap, dtype=np.int64)
    rows = max(1, chunk_elements // max(1, n_img))
    for start in range(0, n_cap, rows):
        sims = caption_emb[start : start + rows] @ image_emb.T
        correct = sims[np.arange(len(sims)), caption_image[start : start + rows]]
        # the correct image itself satisfies >=, so this count is 1 + wrong items scoring at least as high
        t2i[start : start + rows] = (sims >= correct[:, None]).sum(axis=1)

    i2t = np.zeros(n_img, dtype=np.int64)
    rows = max(1, chunk_elements // max(1, n_cap))
    for start in range(0, n_img, rows):
        sims = image_emb[start : start + rows] @ caption_emb.T
        is_correct = caption_image[None, :] == np.arange(start, start + len(sims))[:, None]
        best = np.where(is_correct, sims, -np.inf).max(axis=1, initial=-np.inf)
        ranks = 1 + ((sims >= best[:, None]) & ~is_correct).sum(axis=1)
        i2t[start : start + rows] = np.where(is_correct.any(axis=1), ranks, 0)
    return Ranks(t2i, i2t)


def _ranks_from_hits(scores: np.ndarray, is_correct: np.ndarray, valid: np.ndarray, depth: int) -> np.ndarray:
    best = np.where(is_correct, scores, -np.inf).max(axis=1, initial=-np.inf)
    ranks = 1 + ((scores >= best[:, None]) & ~is_correct & valid).sum(axis=1)
    return np.where(is_correct.any(axis=1), ranks, depth + 1).astype(np.int64)


def search_ranks(
    search_images: SearchFn,
    search_captions: SearchFn,
    image_emb: np.ndarray,
    caption_emb: np.ndarray,
    caption_image: np.ndarray,
    depth: int,
) -> Ranks:
    """Ranks through top-``depth`` search functions ``(queries, k) -> (scores, indices)``.

    ``search_images`` searches the images (caption queries), ``search_captions`` the captions (image
    queries); indices refer to rows of ``image_emb`` / ``caption_emb``, -1 marks a missing result.
    """
    caption_image = _check(np.asarray(image_emb), np.asarray(caption_emb), caption_image)
    n_img = len(image_emb)

    scores, indices = search_images(np.asarray(caption_emb, dtype=np.float32), depth)
    t2i = _ranks_from_hits(scores, indices == caption_image[:, None], indices >= 0, depth)

    i2t = np.zeros(n_img, dtype=np.int64)
    queries = np.unique(caption_image)
    if len(queries):
        scores, indices = search_captions(np.asarray(image_emb, dtype=np.float32)[queries], depth)
        valid = indices >= 0
        owner = np.where(valid, caption_image[np.clip(indices, 0, None)], -1)
        i2t[queries] = _ranks_from_hits(scores, owner == queries[:, None], valid, depth)
    return Ranks(t2i, i2t, depth=depth)


def _direction_metrics(ranks: np.ndarray, ks: Sequence[int], depth: int | None) -> dict[str, float | None]:
    ranks = ranks[ranks > 0]
    if not len(ranks):
        raise ValueError("no queries in this direction")
    out: dict[str, float | None] = {}
    for k in ks:
        if depth is not None and k > depth:
            raise ValueError(f"R@{k} needs ranks to depth {k}, but the search only went to {depth}")
        out[f"R@{k}"] = float(100.0 * np.mean(ranks <= k))
    ordered = np.sort(ranks)
    middle = ordered[[(len(ordered) - 1) // 2, len(ordered) // 2]]
    known = depth is None or middle.max() <= depth
    out["median_rank"] = float(middle.mean()) if known else None
    out["mean_rank"] = float(ranks.mean()) if depth is None or ranks.max() <= depth else None
    return out


def metrics_from_ranks(ranks: Ranks, ks: Sequence[int] = (1, 5, 10)) -> Metrics:
    """R@K (percent), median and mean rank per direction; a rank statistic a censored search cannot know is None."""
    return {
        "text_to_image": _direction_metrics(ranks.text_to_image, ks, ranks.depth),
        "image_to_text": _direction_metrics(ranks.image_to_text, ks, ranks.depth),
    }


def recall_metrics(
    image_emb: np.ndarray, caption_emb: np.ndarray, caption_image: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> Metrics:
    """Exact Recall@K both ways: ``{"text_to_image": {"R@1": %, ..., "median_rank", "mean_rank"}, "image_to_text": ...}``."""
    return metrics_from_ranks(exact_ranks(image_emb, caption_emb, caption_image), ks)


def mean_recall(metrics: Metrics) -> float:
    """The mean of every R@K value over both directions (a single model-selection number)."""
    values = [v for d in EVALUATED for key, v in metrics[d].items() if key.startswith("R@") and v is not None]
    if not values:
        raise ValueError("metrics hold no R@K values")
    return float(np.mean(values))


def neighbour_recall(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean fraction of each query's exact top-``k`` found in the approximate top-``k`` (HNSW recall@k vs exact)."""
    approx, exact = approx[:, :k], exact[:, :k]
    if not len(exact):
        raise ValueError("no queries")
    valid = exact >= 0
    found = ((approx[:, :, None] == exact[:, None, :]) & valid[:, None, :]).any(axis=1).sum(axis=1)
    return float(np.mean(found / np.maximum(1, valid.sum(axis=1))))
