"""Recall@K of the fast mode against the exact fp32 mode, same model and split, one run.

For each model, the split is embedded through the engine (``core.embed.cache.split_embeddings``, whose
caches keep fp32 and each fast format apart) in fp32 and in ``fast``; exact Recall@K both ways is computed
for each and the largest difference reported (the goal: within 0.2 point). The engine's fast path is the
one the library and big embedding runs use (bf16 copy, prepacked layers, channels-last, draft decoding;
for a convolutional timm image tower, such as lit-lite2's, an fp32 copy with BatchNorm folded and
channels-last, see ``core.embed.fp32_fast``: ``computes_in`` says which).

Usage: CAPSEARCH_ARTIFACTS=artifacts flock /work/bench.lock .venv/bin/python scripts/check_fast_recall.py \
    --models /path/to/lit-lite2-flickr8k [--dataset flickr8k] [--split test]
Writes artifacts/results/fast_recall.json (one entry per model, merged).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from benchlib import commit, flickr8k_dataset, machine_info  # noqa: E402

from core.atomic import write_json  # noqa: E402
from core.data.records import load_dataset  # noqa: E402
from core.embed.cache import split_embeddings  # noqa: E402
from core.embed.engine import inference_model  # noqa: E402
from core.embed.fp32_fast import image_input_dtype  # noqa: E402
from core.evaluation.recall import recall_metrics  # noqa: E402
from core.models.loading import load_model  # noqa: E402
from core.paths import results_dir  # noqa: E402

KS = (1, 5, 10)


def one_model(name: str, dataset: Any, split: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    metrics, embeddings = {}, {}
    for precision in ("fp32", "fast"):
        lm = load_model(name, device="cpu", precision=precision)
        t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
        emb = embeddings[precision] = split_embeddings(lm, dataset, split)
        metrics[precision] = recall_metrics(emb.image_emb, emb.caption_emb, emb.caption_image, KS)
        out[precision] = {
            "format": lm.precision,
            "computes_in": str(image_input_dtype(inference_model(lm), lm.dtype)).removeprefix("torch."),
            "model_id": lm.model_id,
            "cache_reused": emb.reused,
            "embed_seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - c0, 1),
            "load_average_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
            "images": len(emb.records),
            "captions": len(emb.captions),
            "failed_images": len(emb.failed),
            "recall": metrics[precision],
        }
    diffs = {
        f"{direction} R@{k}": round(
            metrics["fast"][direction][f"R@{k}"] - metrics["fp32"][direction][f"R@{k}"], 3
        )
        for direction in ("text_to_image", "image_to_text")
        for k in KS
    }
    out["fast_minus_fp32_points"] = diffs
    out["per_tower"] = per_tower(embeddings["fp32"], embeddings["fast"])
    out["max_abs_difference_points"] = max(abs(v) for v in diffs.values())
    out["goal_points"] = 0.2
    return out


def per_tower(exact: Any, fast: Any) -> dict[str, Any]:
    """Which tower moves the ranking: each tower's cosine to its fp32 embeddings, and R@K with only that
    tower in the fast format."""

    def cosine(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
        c = np.einsum("nd,nd->n", a, b)
        return {"min": round(float(c.min()), 6), "mean": round(float(c.mean()), 6)}

    def rounded(m: dict[str, Any]) -> dict[str, list[float]]:
        return {d: [round(m[d][f"R@{k}"], 2) for k in KS] for d in m}

    ci = exact.caption_image
    return {
        "image_cosine_fast_vs_fp32": cosine(exact.image_emb, fast.image_emb),
        "caption_cosine_fast_vs_fp32": cosine(exact.caption_emb, fast.caption_emb),
        "recall_fast_images_only": rounded(recall_metrics(fast.image_emb, exact.caption_emb, ci, KS)),
        "recall_fast_captions_only": rounded(recall_metrics(exact.image_emb, fast.caption_emb, ci, KS)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument(
        "--dataset", default="flickr8k", help="flickr8k, or a prepared dataset's name or folder"
    )
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    dataset = flickr8k_dataset() if args.dataset == "flickr8k" else load_dataset(args.dataset)
    target = results_dir() / "fast_recall.json"
    try:
        everything = json.loads(target.read_text())
    except (OSError, ValueError):
        everything = {"check": __doc__.splitlines()[0], "models": {}}
    for name in args.models:
        result = one_model(name, dataset, args.split)
        label = Path(name).name
        everything["models"][label] = {
            **result,
            "dataset": f"{dataset.name} {args.split}",
            "machine": machine_info(),
            "commit": commit(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        write_json(target, everything)
        print(f"{label}: fast vs fp32 max |dR@K| {result['max_abs_difference_points']} points -> {target}")


if __name__ == "__main__":
    main()
