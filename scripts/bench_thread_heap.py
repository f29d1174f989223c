"""Encoding in a worker thread against the main thread, with and without one shared malloc arena.

    flock /work/bench.lock .venv/bin/python scripts/bench_thread_heap.py [--model capsearch-lit-lite2]

The TUI encodes and trains in worker threads and the service in its own threads, where glibc's per-thread
arenas map every large allocation afresh (core.embed.heap). Each setting runs in a fresh process (the
arena setting cannot be undone): the engine encodes the same Flickr8k test images in the main thread and
in a new thread, alternately for ``--rounds`` rounds. Writes artifacts/results/bench_thread_heap.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import FLICKR8K, commit, machine_info, runs_log

from core.atomic import write_json
from core.paths import results_dir

SETTINGS = {"own_arenas": False, "one_arena": True}


def measure(model: str, precision: str, images: int, rounds: int, share: bool) -> dict[str, list[float]]:
    """Images/s in the main thread and in a new thread, ``rounds`` times each (in this process)."""
    from bench_embedding import flickr8k_test

    from core.embed.engine import encode_images
    from core.embed.heap import share_one_arena
    from core.models.loading import load_model

    if share:
        share_one_arena()
    paths, _ = flickr8k_test(FLICKR8K, images, 0)
    lm = load_model(model, device="cpu", precision=precision)
    encode_images(lm, paths[:32])  # the probe and the inference copy, outside the timings

    def rate() -> float:
        start = time.perf_counter()
        encode_images(lm, paths)
        return len(paths) / (time.perf_counter() - start)

    out: dict[str, list[float]] = {"main_thread": [], "new_thread": []}
    for _ in range(rounds):
        out["main_thread"].append(rate())
        box: list[float] = []
        thread = threading.Thread(target=lambda into: into.append(rate()), args=(box,))
        thread.start()
        thread.join()
        out["new_thread"].append(box[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="capsearch-lit-lite2")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rates = measure(args.model, args.precision, args.images, args.rounds, SETTINGS[args.child])
        print(json.dumps(rates))
        return
    result: dict[str, Any] = {
        "model": args.model,
        "precision": args.precision,
        "images": args.images,
        "rounds": args.rounds,
    }
    for setting in SETTINGS:
        argv = [sys.executable, __file__, *sys.argv[1:], "--child", setting]
        proc = subprocess.run(argv, capture_output=True, text=True, check=True)
        rates = json.loads(proc.stdout.strip().splitlines()[-1])
        result[setting] = {
            where: {"median": round(statistics.median(v), 2), "runs": [round(r, 2) for r in v]}
            for where, v in rates.items()
        }
        print(setting, result[setting], file=sys.stderr, flush=True)
    result |= {"commit": commit(), "machine": machine_info()}
    out = results_dir() / "bench_thread_heap.json"
    write_json(out, {**result, "runs": runs_log(out, result)})
    print(f"-> {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
