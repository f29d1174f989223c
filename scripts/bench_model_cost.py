"""Inference cost of a model family on this CPU: image and caption throughput through the engine and the
latency of one text query (query -> hits through core.search.retriever), for each model in fp32 and in the
fast mode, on the same images and captions, in one run.

    CAPSEARCH_ARTIFACTS=artifacts python scripts/bench_model_cost.py \
        --models lit-lite2-flickr8k ViT-B-32 --images 64 --captions 500 --queries 30

ViT-B-32 runs with random weights (its speed does not depend on them). The query latency is measured on a
small prepared dataset made of the benchmark's images (``flickr8k-cost-<n>``: those images as its test
split), so that building its index costs little; every query is a different caption (the retriever caches
query vectors). Each figure has wall seconds and process CPU seconds (the machine is shared: the load
average is recorded before and after each model). Writes artifacts/results/model_cost.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import machine_info  # noqa: E402
from finetune_experiments import write_subset  # noqa: E402

from core.atomic import write_json  # noqa: E402
from core.data.records import PreparedDataset, load_dataset  # noqa: E402
from core.embed.engine import encode_images, encode_texts  # noqa: E402
from core.evaluation.latency import percentiles  # noqa: E402
from core.models.loading import load_model  # noqa: E402
from core.paths import results_dir  # noqa: E402
from core.search.retriever import Retriever  # noqa: E402


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["lit-lite2-flickr8k", "ViT-B-32"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "fast"])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--captions", type=int, default=500)
    ap.add_argument("--queries", type=int, default=30)
    return ap.parse_args()


def _timed(fn: Any) -> tuple[Any, float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def _subset(n: int) -> PreparedDataset:
    parent = load_dataset("flickr8k")
    rows = {"train": [], "val": [], "test": parent.split("test")[:n]}
    return write_subset(parent, f"flickr8k-cost-{n}", rows, f"the first {n} flickr8k test images")


def _one(name: str, precision: str, data: PreparedDataset, texts: list[str], queries: list[str]) -> dict:
    lm = load_model(name, device="cpu", precision=precision)
    paths = [data.image_path(r) for r in data.split("test")]
    load0 = os.getloadavg()[0]
    encode_images(lm, paths[:8])  # warm-up (weights packed, threads started)
    _, img_s, img_cpu = _timed(lambda: encode_images(lm, paths, 32))
    encode_texts(lm, texts[:16])
    _, txt_s, txt_cpu = _timed(lambda: encode_texts(lm, texts))
    retriever = Retriever.open(data, lm, split="test", index="exact")
    retriever.search_text("a warm-up query", k=10)
    wall, cpu = [], []
    for q in queries:
        _, w, c = _timed(lambda q=q: retriever.search_text(q, k=10))
        wall.append(w * 1000)
        cpu.append(c * 1000)
    return {
        "model_id": lm.model_id,
        "precision": lm.precision,
        "embed_dim": lm.embed_dim,
        "images": {
            "count": len(paths),
            "seconds": round(img_s, 2),
            "cpu_seconds": round(img_cpu, 2),
            "per_second": round(len(paths) / img_s, 2),
        },
        "captions": {
            "count": len(texts),
            "seconds": round(txt_s, 2),
            "cpu_seconds": round(txt_cpu, 2),
            "per_second": round(len(texts) / txt_s, 1),
        },
        "query_latency_ms": {**percentiles(wall), "cpu_ms": percentiles(cpu), "queries": len(queries)},
        "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> int:
    args = _args()
    data = _subset(args.images)
    flickr = load_dataset("flickr8k")
    texts = [c for r in flickr.split("test")[: args.images] for c in r.captions][: args.captions]
    queries = [c for r in flickr.split("val") for c in r.captions[:1]][: args.queries]
    runs = {}
    for name in args.models:
        for precision in args.precisions:
            runs[f"{name}/{precision}"] = _one(name, precision, data, texts, queries)
            print(name, precision, runs[f"{name}/{precision}"], flush=True)
    write_json(
        results_dir() / "model_cost.json",
        {
            "runs": runs,
            "note": "ViT-B-32 with random weights (speed only); the machine is shared with other jobs: "
            "compare cpu_seconds as well as seconds",
            "machine": {**machine_info(), "torch_threads": torch.get_num_threads()},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
