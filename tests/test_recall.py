"""Recall@K and ranks against an independent brute-force reference, ties included."""

from __future__ import annotations

import statistics

import faiss
import numpy as np
import pytest

from core.evaluation.recall import (
    exact_ranks,
    mean_recall,
    metrics_from_ranks,
    neighbour_recall,
    recall_metrics,
    search_ranks,
)

KS = (1, 5, 10)


def _reference(image_emb: np.ndarray, caption_emb: np.ndarray, caption_image: list[int]) -> tuple[list, list]:
    """Rank every query by sorting candidates, wrong ones before correct ones on equal (exact integer) scores."""
    sims = caption_emb.astype(np.int64) @ image_emb.astype(np.int64).T  # exact: the vectors are integers
    t2i = []
    for c, gold in enumerate(caption_image):
        order = sorted(range(len(image_emb)), key=lambda j, c=c, gold=gold: (-sims[c, j], j == gold))
        t2i.append(order.index(gold) + 1)
    i2t = []
    for i in range(len(image_emb)):
        if i not in caption_image:
            i2t.append(0)
            continue
        order = sorted(range(len(caption_emb)), key=lambda j, i=i: (-sims[j, i], caption_image[j] == i))
        i2t.append(next(pos for pos, j in enumerate(order, 1) if caption_image[j] == i))
    return t2i, i2t


def _reference_metrics(ranks: list[int]) -> dict:
    ranks = [r for r in ranks if r > 0]
    out = {f"R@{k}": 100.0 * sum(r <= k for r in ranks) / len(ranks) for k in KS}
    out["median_rank"] = float(statistics.median(ranks))
    out["mean_rank"] = float(statistics.mean(ranks))
    return out


def _tied_problem(seed: int, n_img: int = 40, dim: int = 3) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Integer vectors in {-1, 0, 1}^3: few distinct scores, so ties are everywhere; 0 to 4 captions per image."""
    rng = np.random.default_rng(seed)
    image_emb = rng.integers(-1, 2, size=(n_img, dim)).astype(np.float32)
    caption_image = [i for i in range(n_img) for _ in range(rng.integers(0, 5))]
    rng.shuffle(caption_image)
    caption_emb = rng.integers(-1, 2, size=(len(caption_image), dim)).astype(np.float32)
    return image_emb, caption_emb, caption_image


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk", [5, 1 << 24])
def test_exact_ranks_match_brute_force_reference_with_ties(seed: int, chunk: int) -> None:
    image_emb, caption_emb, caption_image = _tied_problem(seed)
    ranks = exact_ranks(image_emb, caption_emb, np.array(caption_image), chunk_elements=chunk)
    ref_t2i, ref_i2t = _reference(image_emb, caption_emb, caption_image)
    assert ranks.text_to_image.tolist() == ref_t2i
    assert ranks.image_to_text.tolist() == ref_i2t
    assert 0 in ref_i2t, "the problem should include an image without captions"

    metrics = recall_metrics(image_emb, caption_emb, np.array(caption_image), ks=KS)
    assert metrics["text_to_image"] == pytest.approx(_reference_metrics(ref_t2i))
    assert metrics["image_to_text"] == pytest.approx(_reference_metrics(ref_i2t))


def test_ties_count_against_the_query() -> None:
    """A collapsed model (all embeddings equal) gets the worst rank, not a lucky R@1 of 100."""
    image_emb = np.ones((6, 4), np.float32)
    caption_emb = np.ones((12, 4), np.float32)
    caption_image = np.repeat(np.arange(6), 2)
    ranks = exact_ranks(image_emb, caption_emb, caption_image)
    assert ranks.text_to_image.tolist() == [6] * 12
    assert ranks.image_to_text.tolist() == [11] * 6  # 10 wrong captions tie with the correct ones
    metrics = metrics_from_ranks(ranks, ks=(1, 5, 10))
    assert metrics["text_to_image"]["R@1"] == 0.0
    assert metrics["image_to_text"]["R@10"] == 0.0


def test_perfect_embeddings_score_100() -> None:
    image_emb = np.eye(5, dtype=np.float32)
    caption_image = np.array([0, 0, 1, 2, 3, 4, 4])
    metrics = recall_metrics(image_emb, image_emb[caption_image], caption_image, ks=(1,))
    for direction in ("text_to_image", "image_to_text"):
        assert metrics[direction] == {"R@1": 100.0, "median_rank": 1.0, "mean_rank": 1.0}
    assert mean_recall(metrics) == 100.0


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_search_ranks_agree_with_exact_ranks_up_to_depth() -> None:
    rng = np.random.default_rng(7)
    image_emb = _unit(rng, 60, 16)
    caption_image = np.repeat(np.arange(60), 3)
    caption_image[:3] = 1  # image 0 has no captions
    caption_emb = _unit(rng, len(caption_image), 16) + 0.8 * image_emb[caption_image]
    flat_images, flat_captions = faiss.IndexFlatIP(16), faiss.IndexFlatIP(16)
    flat_images.add(image_emb)
    flat_captions.add(np.ascontiguousarray(caption_emb, dtype=np.float32))

    depth = 10
    approx = search_ranks(
        flat_images.search, flat_captions.search, image_emb, caption_emb, caption_image, depth
    )
    exact = exact_ranks(image_emb, caption_emb, caption_image)
    assert approx.text_to_image.tolist() == np.minimum(exact.text_to_image, depth + 1).tolist()
    assert approx.image_to_text.tolist() == np.minimum(exact.image_to_text, depth + 1).tolist()
    assert approx.image_to_text[0] == 0

    got, want = metrics_from_ranks(approx, KS), metrics_from_ranks(exact, KS)
    for direction in ("text_to_image", "image_to_text"):
        for k in KS:
            assert got[direction][f"R@{k}"] == want[direction][f"R@{k}"]
        if want[direction]["median_rank"] <= depth:
            assert got[direction]["median_rank"] == want[direction]["median_rank"]
        if exact.text_to_image.max() > depth:
            assert got["text_to_image"]["mean_rank"] is None
    with pytest.raises(ValueError, match="depth"):
        metrics_from_ranks(approx, ks=(20,))


def test_neighbour_recall() -> None:
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    approx = np.array([[3, 2, 9], [4, 5, 6]])
    assert neighbour_recall(approx, exact, 3) == pytest.approx((2 / 3 + 1) / 2)
    assert neighbour_recall(approx, exact, 1) == pytest.approx(0.5)


def test_bad_ground_truth_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        exact_ranks(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="shape"):
        exact_ranks(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), np.array([0, 1]))
