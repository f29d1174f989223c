"""Train a compact capsearch model from scratch on the Flickr8k train split (val for model selection) under a
wall-clock budget, then evaluate the best checkpoint on the 1,000-image test split.

    .venv/bin/python scripts/train_compact_flickr8k.py --budget-min 58 --threads 1   # 128 px, MiniLM text

Writes artifacts/models/<name>/ (checkpoint, train.json), artifacts/results/train-<name>.json and
artifacts/reports/train-<name>.png. ``--compare A.json B.json`` writes the side-by-side comparison instead.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from benchlib import FLICKR8K, flickr8k_dataset

from core.atomic import write_json
from core.data.records import PreparedDataset
from core.paths import models_dir, reports_dir, results_dir
from core.progress import Reporter
from core.train.report import plot_curves
from core.train.setup import StartModel, start_model
from core.train.trainer import TrainConfig, load_best, train
from core.train.validation import SplitData, evaluate

VARIANTS = {  # name: (config, freezing policy)
    "scratch": ("capsearch-compact-scratch", "full"),
    "minilm": ("capsearch-compact-minilm", "frozen-text"),
    "minilm128": ("capsearch-compact-minilm128", "frozen-text"),
    "minilm160": ("capsearch-compact-minilm160", "frozen-text"),
}


class PrintReporter(Reporter):
    """Plain log lines (for a nohup log file): every 20th step and every validation."""

    def update(self, stage: str, done: int, total: int | None = None, **info: object) -> None:
        if stage == "val" or (stage == "train" and done % 20 == 0):
            print(f"{time.strftime('%H:%M:%S')} {stage} {done}/{total} {info}", flush=True)

    def log(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def train_config(args: argparse.Namespace, freeze: str) -> TrainConfig:
    """The training recipe from the command line (on the CPU)."""
    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup,
        freeze=freeze,
        captions_per_image=args.captions_per_image,
        flip=args.flip,
        weight_decay=args.weight_decay,
        time_budget_s=args.budget_min * 60,
        seed=args.seed,
        crop_scale=args.crop_scale,
        device="cpu",
    )


def recall_on_test(start: StartModel, dataset: PreparedDataset, reporter: Reporter | None = None) -> dict:
    """Recall of ``start``'s model (as loaded now) on the test split."""
    cpu = torch.device("cpu")
    return evaluate(start.model, SplitData.load(start, dataset, "test", cpu, reporter), cpu)


def checkpoint_mb(out: Path) -> float:
    return round(os.path.getsize(out / "model.safetensors") / 2**20, 1)


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    config_name, freeze = VARIANTS[args.variant]
    dataset = flickr8k_dataset(source=args.flickr8k)
    reporter = PrintReporter()
    start = start_model(config_name, seed=args.seed)
    cfg = train_config(args, freeze)
    out = models_dir() / args.name
    t0 = time.monotonic()
    meta = {"variant": args.variant, "config": config_name}
    result = train(start, dataset, out, cfg, reporter, meta=meta, resume=not args.restart)
    wall = time.monotonic() - t0
    load_best(start.model, out)
    test = recall_on_test(start, dataset, reporter)
    row = {
        "name": args.name,
        "variant": args.variant,
        "config": config_name,
        "freeze": freeze,
        "model_id": result.model_id,
        "dataset": dataset.name,
        "budget_min": args.budget_min,
        "train_seconds": round(result.train_seconds, 1),
        "wall_seconds_incl_data_prep": round(wall, 1),
        "steps": result.steps,
        "stopped": result.stopped,
        "best_epoch": result.best_epoch,
        "threads": torch.get_num_threads(),
        "params_total": sum(p.numel() for p in start.model.parameters()),
        "params_trained": sum(p.numel() for p in start.model.parameters() if p.requires_grad),
        "checkpoint_mb": checkpoint_mb(out),
        "train_config": cfg.to_dict(),
        "val_best": result.best_val,
        "test": test,
        "curve": result.curve,
    }
    write_json(results_dir() / f"train-{args.name}.json", row)
    plot_curves(
        {args.variant: result.curve},
        reports_dir() / f"train-{args.name}.png",
        f"{args.name}: Flickr8k, {args.budget_min:g} min budget",
    )
    print(json.dumps({k: row[k] for k in ("name", "train_seconds", "steps", "best_epoch")}), flush=True)
    print("TEST", json.dumps(test), flush=True)
    return row


def eval_only(args: argparse.Namespace) -> None:
    """Test recall of the best checkpoint of a run that was stopped by hand (no train.json summary)."""
    dataset = flickr8k_dataset(source=args.flickr8k)
    out = models_dir() / args.name
    start = start_model(str(out))
    meta = json.loads((out / "model.json").read_text())
    test = recall_on_test(start, dataset)
    curve = meta["val_curve"]
    row = {
        "name": args.name,
        "model_id": start.start_id,
        "dataset": dataset.name,
        "stopped": "by hand",
        "note": args.note,
        "train_seconds_at_best": curve[-1]["elapsed_s"] if curve else None,
        "best_epoch": meta["best_epoch"],
        "model_cfg": meta["model_cfg"],
        "params_total": sum(p.numel() for p in start.model.parameters()),
        "checkpoint_mb": checkpoint_mb(out),
        "train_config": meta["train_args"],
        "val_best": meta["val_metrics"],
        "test": test,
        "curve": curve,
    }
    write_json(results_dir() / f"train-{args.name}.json", row)
    plot_curves({args.name: curve}, reports_dir() / f"train-{args.name}.png", f"{args.name}: Flickr8k")
    print("TEST", json.dumps(test), flush=True)


def compare(paths: list[Path], out_name: str) -> None:
    rows = [json.loads(p.read_text()) for p in paths]
    summary = {
        r["variant"]: {
            "test_text_to_image": r["test"]["text_to_image"],
            "test_image_to_text": r["test"]["image_to_text"],
            "test_mean_recall": r["test"]["mean_recall"],
            "train_seconds": r["train_seconds"],
            "steps": r["steps"],
            "params_total": r["params_total"],
            "params_trained": r["params_trained"],
            "checkpoint_mb": r["checkpoint_mb"],
            "source": p.name,
        }
        for r, p in zip(rows, paths, strict=True)
    }
    best = max(summary, key=lambda v: summary[v]["test_mean_recall"])
    write_json(
        results_dir() / f"{out_name}.json",
        {
            "variants": summary,
            "better": best,
            "note": (
                "same 12-min wall-clock budget, trained at the same time with 1 thread each on the 2-vCPU "
                "machine shared with other jobs; 96-px images; one caption per image per step"
            ),
        },
    )
    plot_curves(
        {r["variant"]: r["curve"] for r in rows},
        reports_dir() / f"{out_name}.png",
        "compact model: from-scratch text tower vs frozen MiniLM text tower (same budget)",
    )
    print(json.dumps({"better": best, **{v: s["test_mean_recall"] for v, s in summary.items()}}))


def parser() -> argparse.ArgumentParser:
    """The command line, its defaults the recipe (scripts/bench_training.py trains with them too)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="minilm128")
    ap.add_argument("--name", default="compact-flickr8k-128")
    ap.add_argument("--budget-min", type=float, default=60.0)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--crop-scale", type=float, default=0.4)
    ap.add_argument(
        "--flip", action=argparse.BooleanOptionalAction, default=True, help="random horizontal flips"
    )
    ap.add_argument("--weight-decay", type=float, default=0.2)
    ap.add_argument("--captions-per-image", type=int, default=5, help="captions of each image per step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--restart", action="store_true", help="ignore a last-state file and start over")
    ap.add_argument("--flickr8k", type=Path, default=FLICKR8K)
    ap.add_argument("--compare", type=Path, nargs="+", help="results JSONs to compare (no training)")
    ap.add_argument("--compare-name", default="compact-comparison")
    ap.add_argument("--eval-only", action="store_true", help="only test the saved best checkpoint of --name")
    ap.add_argument("--note", default="", help="note stored with --eval-only results")
    return ap


def main() -> None:
    args = parser().parse_args()
    if args.compare:
        compare(args.compare, args.compare_name)
    elif args.eval_only:
        eval_only(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
