"""Training speed: optimizer steps per second of the project's trainer (core.train.trainer), timed from its
own progress reports, so validation, data loading and checkpoints stay out of the figure.

    .venv/bin/python scripts/bench_training.py --case demo
    .venv/bin/python scripts/bench_training.py --case flickr8k-compact

Cases: ``demo``, the demo model's recipe on the built-in synthetic scenes (what scripts/run.sh trains under a
65 s budget); ``flickr8k-compact``, capsearch-compact-minilm128 on the Flickr8k train split with
scripts/train_compact_flickr8k.py's recipe, read from its command-line defaults (batch 128, five captions
per image, crops and flips). Each run trains a fresh model for ``--steps`` steps, then stops through the
trainer's own cancellation, and rates the steps after the first ``--warmup``. Writes artifacts/results/bench_training_<case>.json (earlier runs kept in its
``runs``); scripts/compare_commits.py --bench training_demo | training_flickr8k runs two commits alternately.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from benchlib import FLICKR8K, commit, flickr8k_dataset, machine_info, runs_log

from core.atomic import write_json
from core.data.records import PreparedDataset
from core.errors import Cancelled
from core.paths import results_dir
from core.progress import Reporter
from core.train.trainer import TrainConfig, train


class StepClock(Reporter):
    """Notes when each training step ends and cancels the run once ``steps`` steps are done."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.ends: list[float] = []

    def update(self, stage: str, done: int, total: int | None = None, **info: Any) -> None:
        if stage == "train":
            self.ends.append(time.perf_counter())
            if done >= self.steps:
                self.cancel()


def demo_case() -> tuple[str, PreparedDataset, TrainConfig]:
    from core.data.prepare import prepare_synthetic
    from core.data.records import load_dataset
    from core.demo import DEMO_CONFIG, DEMO_DATASET, DEMO_SCENES, demo_train_config
    from core.errors import DatasetError

    try:
        dataset = load_dataset(DEMO_DATASET)
    except DatasetError:
        dataset = prepare_synthetic(n=DEMO_SCENES, name=DEMO_DATASET)
    return DEMO_CONFIG, dataset, demo_train_config()


def flickr8k_compact_case(source: Path) -> tuple[str, PreparedDataset, TrainConfig]:
    from train_compact_flickr8k import VARIANTS, parser, train_config

    args = parser().parse_args([])
    config, freeze = VARIANTS[args.variant]
    return config, flickr8k_dataset(source=source), train_config(args, freeze)


def one_run(config: str, dataset: PreparedDataset, cfg: TrainConfig, steps: int, warmup: int) -> float:
    """Steps per second of a fresh model trained for ``steps`` steps, over the steps after ``warmup``."""
    from core.train.setup import start_model

    clock = StepClock(steps)
    start = start_model(config, seed=cfg.seed, device="cpu")
    # StepClock stops the run after its steps
    with tempfile.TemporaryDirectory() as out, contextlib.suppress(Cancelled):
        train(start, dataset, Path(out), cfg, clock, resume=False)
    timed = clock.ends[warmup - 1 :]
    if len(timed) < 2:
        raise SystemExit(f"only {len(clock.ends)} steps ran; raise --steps above --warmup")
    return (len(timed) - 1) / (timed[-1] - timed[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=("demo", "flickr8k-compact"), default="demo")
    parser.add_argument("--steps", type=int, default=40, help="steps per run (default 40)")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the rate (default 5)")
    parser.add_argument("--runs", type=int, default=2, help="fresh training runs (default 2)")
    parser.add_argument("--flickr8k", type=Path, default=FLICKR8K)
    args = parser.parse_args()
    if args.case == "demo":
        config, dataset, cfg = demo_case()
    else:
        config, dataset, cfg = flickr8k_compact_case(args.flickr8k)
    cfg = dataclasses.replace(cfg, time_budget_s=None, min_steps=0)
    rates = []
    for run in range(args.runs):
        rates.append(one_run(config, dataset, cfg, args.steps, args.warmup))
        print(f"run {run + 1}: {rates[-1]:.3f} steps/s", file=sys.stderr, flush=True)
    steps_per_s = statistics.median(rates)
    result = {
        "case": args.case,
        "model_config": config,
        "dataset": dataset.name,
        "batch_size": cfg.batch_size,
        "precision": cfg.precision,
        "steps": args.steps,
        "warmup_steps_left_out": args.warmup,
        "steps_per_s": {"median": round(steps_per_s, 3), "runs": [round(r, 3) for r in rates]},
        "images_per_s": {"median": round(steps_per_s * cfg.batch_size, 1)},
        "threads": torch.get_num_threads(),
        "commit": commit(),
        "machine": machine_info(),
    }
    out = results_dir() / f"bench_training_{args.case.replace('-', '_')}.json"
    write_json(out, {**result, "runs": runs_log(out, result)})
    print(f"{args.case}: {steps_per_s:.3f} steps/s ({steps_per_s * cfg.batch_size:.1f} images/s) -> {out}")


if __name__ == "__main__":
    main()
