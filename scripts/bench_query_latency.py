"""Text query latency end to end: tokenize + encode + exact FAISS search + metadata, through the Retriever.

ViT-B-32 (random init) on the Flickr8k test gallery (1,000 images), CPU. Queries are ~50 distinct test
captions per round, other captions each round, every setting interleaved within a round. End-to-end times
``Retriever.search_text`` (query parse, encoding, search over the image index, hits with their records and
paths); then the encoding and the search are timed apart, and the encoding with 1 vs the default number of
intra-op threads, in the other precision, and (bf16) without prepacked linear layers.

Usage: .venv/bin/python scripts/bench_query_latency.py [--dataset flickr8k] [--queries 50] [--precision bf16]
(the dataset is prepared from ../shared/data/flickr8k when missing). Writes
artifacts/results/bench_query_latency_<precision>.json. The first run also embeds the test split (cached after).
This shared VM's speed swings with its neighbours' load (the same code measured 13 and 24 ms p50 half an
hour apart), so the file also keeps a line per run (``runs``, with the code's commit) and the median over
the runs of the current commit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import FLICKR8K, commit, flickr8k_dataset, machine_info, runs_log  # noqa: E402

from core.atomic import write_json  # noqa: E402
from core.embed import engine  # noqa: E402
from core.evaluation.latency import percentiles  # noqa: E402
from core.models.loading import LoadedModel, load_model  # noqa: E402
from core.paths import results_dir  # noqa: E402
from core.search.retriever import Retriever  # noqa: E402

MODEL = "ViT-B-32"


def time_each(fn: Callable[[str], Any], queries: list[str]) -> list[float]:
    out = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        out.append(1000 * (time.perf_counter() - start))
    return out


def with_run_history(out: Path, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` plus the earlier runs kept in ``out`` and the median p50 over this commit's runs."""
    e2e = result["end_to_end_ms"]
    runs = runs_log(out, {
        "commit": result["commit"],
        "end_to_end_p50_ms": e2e["p50"],
        "end_to_end_p95_ms": e2e["p95"],
        "encode_p50_ms": {name: v["p50"] for name, v in result["encode_ms_by_setting"].items()},
        "load_average": result["machine"]["load_average"],
    })  # fmt: skip
    same = [r["end_to_end_p50_ms"] for r in runs if r["commit"] == result["commit"]]
    return {
        **result,
        "runs": runs,
        "this_commit": {"runs": len(same), "end_to_end_p50_ms_median": round(statistics.median(same), 3),
                        "end_to_end_p50_ms_min": min(same), "end_to_end_p50_ms_max": max(same)},
    }  # fmt: skip


def latency_ms(ms: list[float]) -> dict[str, float]:
    """p50 and p95 (as in evaluation results), mean and min, to the microsecond."""
    return {**percentiles(ms, 3), "mean": round(statistics.fmean(ms), 3), "min": round(min(ms), 3)}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="flickr8k")
    parser.add_argument("--flickr8k", type=Path, default=FLICKR8K)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds, settings interleaved")
    parser.add_argument(
        "--precision", default="fp32", choices=("fp32", "bf16"), help="inference precision (default fp32)"
    )
    return parser.parse_args()


def encoders_to_time(lm: LoadedModel) -> dict[str, tuple[LoadedModel, int]]:
    """Setting name -> (model, query threads): ``lm`` on one and on all threads, the other precision,
    and in bf16 also the model without prepacked linear layers (core.embed.packed)."""
    default_threads = torch.get_num_threads()
    other = load_model(MODEL, device="cpu", precision="bf16" if lm.precision == "fp32" else "fp32")
    engine.encode_text_query(other, "warm up")
    encoders = {
        f"{lm.precision}_1_thread": (lm, 1),
        f"{lm.precision}_{default_threads}_threads": (lm, default_threads),
        f"{other.precision}_1_thread": (other, 1),
    }
    if lm.precision == "bf16":
        engine.PACK_CPU = False
        plain = load_model(MODEL, device="cpu", precision="bf16")
        engine.encode_text_query(plain, "warm up")  # builds (and keeps) its unpacked inference copy
        engine.PACK_CPU = True
        encoders["bf16_unpacked_1_thread"] = (plain, 1)
    return encoders


def time_rounds(
    retriever: Retriever, encoders: dict[str, tuple[LoadedModel, int]], rounds: list[list[str]], k: int
) -> dict[str, list[float]]:
    """Per-query ms of each setting, end to end and of the search alone, settings interleaved per round
    (a slow spell of this shared VM hits them all alike)."""
    timings: dict[str, list[float]] = {name: [] for name in ("end_to_end", "search", *encoders)}
    for queries in rounds:
        timings["end_to_end"] += time_each(lambda q: retriever.search_text(q, k), queries)
        for name, (model, threads) in encoders.items():
            engine.QUERY_THREADS = threads
            timings[name] += time_each(lambda q, m=model: engine.encode_text_query(m, q), queries)
        engine.QUERY_THREADS = 1
        for q in queries:
            v = engine.encode_text_query(retriever.lm, q)
            t0 = time.perf_counter()
            retriever.image_index.search(v[None, :], k)
            timings["search"].append(1000 * (time.perf_counter() - t0))
    return timings


def main() -> None:
    args = arguments()
    info = machine_info()
    data = flickr8k_dataset(args.dataset, args.flickr8k)
    lm = load_model(MODEL, device="cpu", precision=args.precision)
    start = time.perf_counter()
    retriever = Retriever.open(data, lm, split="test", index="exact")
    open_s = time.perf_counter() - start
    captions = retriever.embeddings.captions
    step = max(1, len(captions) // args.queries)
    # Each round its own distinct captions (the Retriever caches recent query embeddings).
    rounds = [list(dict.fromkeys(captions[r::step]))[: args.queries] for r in range(args.rounds)]
    retriever.search_text("a warm-up query that is not a caption", args.k)
    encoders = encoders_to_time(lm)
    timings = time_rounds(retriever, encoders, rounds, args.k)

    result = {
        "benchmark": "text query latency end to end (tokenize + encode + exact search + metadata)",
        "model": f"{MODEL} (random init)",
        "model_id": lm.model_id,
        "commit": commit(),
        "precision": lm.precision,
        "device": "cpu",
        "timed_through": "core.search.retriever.Retriever.search_text",
        "dataset": data.name,
        "split": "test",
        "gallery_images": retriever.size,
        "index": retriever.index_kind,
        "k": args.k,
        "queries": sum(len(r) for r in rounds),
        "rounds": args.rounds,
        "query_source": f"every {step}th caption of the test split from offset 0, then 1, ... (one per round)",
        "open_s": round(open_s, 2),
        "embeddings_reused": retriever.embeddings.reused,
        "end_to_end_ms": latency_ms(timings["end_to_end"]),
        "encode_ms": latency_ms(timings[f"{lm.precision}_1_thread"]),
        "search_ms": latency_ms(timings["search"]),
        "encode_ms_by_setting": {name: latency_ms(timings[name]) for name in encoders},
        "goal": {"p50_ms": 15},
        "machine": info,
    }
    out = results_dir() / f"bench_query_latency_{lm.precision}.json"
    result = with_run_history(out, result)
    write_json(out, result)
    e2e, same = result["end_to_end_ms"], result["this_commit"]
    print(
        f"end to end p50 {e2e['p50']} ms, p95 {e2e['p95']} ms; median p50 over this commit's "
        f"{same['runs']} runs {same['end_to_end_p50_ms_median']} ms -> {out}"
    )


if __name__ == "__main__":
    main()
