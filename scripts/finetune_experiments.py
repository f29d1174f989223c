"""Fine-tuning proof and the original project's two settings, through the same pipeline.

1. Split the Flickr8k train images in two seeded halves (A, B; same val and test splits).
2. Train a compact model from scratch on half A (short wall-clock budget).
3. Fine-tune it on half B with the recommended recipe (and with a larger learning rate), WiSE-FT on val;
   test recall before -> after, forgetting on the synthetic scenes' test split before -> after.
4. Rerun the original settings on half B: margin loss at lr 5e-6 on all layers; margin loss at lr 1e-7 on
   the projections only.

Writes artifacts/results/finetune-*.json per run and artifacts/results/finetune-experiments.json.

    .venv/bin/python scripts/finetune_experiments.py --base-budget-min 8
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from core.atomic import write_json, write_jsonl
from core.data.prepare import prepare_synthetic
from core.data.records import PreparedDataset, load_dataset
from core.directions import EVALUATED
from core.errors import DatasetError
from core.paths import datasets_dir, models_dir, results_dir
from core.progress import Reporter
from core.train.recipes import finetune
from core.train.setup import start_model
from core.train.trainer import TrainConfig, TrainResult, train

FLICKR8K = "flickr8k"


def write_subset(parent: PreparedDataset, name: str, rows: dict[str, list], source: str) -> PreparedDataset:
    """A prepared dataset ``name`` holding ``rows`` (split -> records of ``parent``) with parent's images."""
    folder = datasets_dir() / name
    for split, records in rows.items():
        write_jsonl(folder / f"{split}.jsonl", [r.to_row() for r in records])
    meta = dict(parent.meta)
    meta.update(
        {
            "name": name,
            "source": source,
            "parent": parent.name,
            "input_checksum": f"{parent.fingerprint[:16]}-{name}",
            "splits": {
                s: {"images": len(r), "captions": sum(len(x.captions) for x in r)} for s, r in rows.items()
            },
        }
    )
    write_json(folder / "dataset.json", meta)
    return load_dataset(name)


def make_halves(seed: int = 0) -> tuple[PreparedDataset, PreparedDataset]:
    """flickr8k-half-a / flickr8k-half-b: disjoint halves of the train images, the same val and test."""
    parent = load_dataset(FLICKR8K)
    train = parent.split("train")
    order = np.random.default_rng(seed).permutation(len(train))
    halves = {"a": sorted(order[: len(train) // 2]), "b": sorted(order[len(train) // 2 :])}
    return tuple(
        write_subset(
            parent,
            f"{FLICKR8K}-half-{tag}",
            {"train": [train[i] for i in idx], "val": parent.split("val"), "test": parent.split("test")},
            f"{parent.name} train half {tag.upper()} (seed {seed}) + its val and test",
        )
        for tag, idx in halves.items()
    )


def probe_of(half_a: PreparedDataset, n: int = 1000, seed: int = 0) -> str:
    """flickr8k-half-a-probe: a dataset whose test split is ``n`` seeded images of half A's train split, so
    that its recall shows how much of what the base model learned survives fine-tuning on half B."""
    train = half_a.split("train")
    pick = sorted(np.random.default_rng(seed).permutation(len(train))[:n])
    rows = {"train": [], "val": [], "test": [train[i] for i in pick]}
    source = f"{n} images of {half_a.name} train (seed {seed}) as its test split"
    return write_subset(half_a, f"{half_a.name}-probe", rows, source).name


def _synthetic() -> str:
    try:
        load_dataset("synthetic")
    except DatasetError:
        prepare_synthetic()
    return "synthetic"


def _brief(summary: dict) -> dict:
    keys = ("name", "seconds", "steps", "wise_ft_alpha", "config")
    out = {k: summary[k] for k in keys}
    for part in ("test_before", "test_after", "test_after_alpha1", "forgetting_before", "forgetting_after"):
        m = summary.get(part)
        out[part] = (
            None
            if m is None
            else {
                **{d.short: {k: round(m[d][k], 2) for k in ("R@1", "R@5", "R@10")} for d in EVALUATED},
                "mean_recall": round(m["mean_recall"], 2),
            }
        )
    return out


RUNS = {  # fine-tuning run tag: its overrides of the recipe
    "recipe": {"lr": 1e-5},
    "recipe-lr1e-4": {"lr": 1e-4},
    "orig-margin-5e-6-all": {"loss": "margin", "lr": 5e-6, "freeze": "full"},
    "orig-margin-1e-7-proj": {"loss": "margin", "lr": 1e-7, "freeze": "proj"},
}


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="capsearch-compact-minilm")
    ap.add_argument("--base-budget-min", type=float, default=8.0)
    ap.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs per run (default 3)")
    ap.add_argument("--run-budget-min", type=float, help="wall-clock cap per fine-tuning run (default: none)")
    ap.add_argument("--only", nargs="+", help="run only these fine-tuning runs (default: all)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--reuse-base", action="store_true", help="keep the base model of an earlier run")
    ap.add_argument(
        "--forgetting",
        choices=("half-a-probe", "synthetic"),
        default="half-a-probe",
        help="forgetting measured on 1,000 of half A's training images (what the base learned) or on the "
        "synthetic scenes' test split",
    )
    return ap.parse_args()


LIT_BASE = {"head_dropout": 0.3, "epochs": 30, "patience": 5}
"""The capsearch-lit head settings chosen on val (artifacts/results/lit-search-log.json)."""
LIT_RUNS = {"lit-recipe": {}, "lit-recipe-lr1e-3": {"lr": 1e-3}}


def train_lit_base(args: argparse.Namespace, half_a: PreparedDataset, base_dir: Path) -> dict:
    """Heads of ``args.config`` trained on half A's cached frozen features with the settings chosen on val."""
    from core.models.checkpoint import build_model, save_checkpoint_dir
    from core.train.lit import LitConfig, lit_checkpoint_meta, lit_model_cfg, train_heads
    from core.train.lit_finetune import features
    from core.train.setup import StartModel

    cfg_model = lit_model_cfg(args.config, head_dropout=LIT_BASE["head_dropout"])
    torch.manual_seed(0)
    start = StartModel(build_model(cfg_model), cfg_model, None, f"{args.config}@random")
    train_f, val_f = (features(start, half_a, s, Log()) for s in ("train", "val"))
    cfg = LitConfig(epochs=LIT_BASE["epochs"], patience=LIT_BASE["patience"])
    t0, c0 = time.monotonic(), time.process_time()
    result = train_heads(start.model, train_f, val_f, cfg, Log())
    meta = lit_checkpoint_meta(args.config, cfg, half_a.name, result)
    model_id = save_checkpoint_dir(base_dir, start.model, cfg_model, meta)
    print(f"base on half A: {model_id} after {time.monotonic() - t0:.0f} s", flush=True)
    return {
        "model_id": model_id,
        "train_seconds": round(result.train_seconds, 1),
        "train_cpu_seconds": round(time.process_time() - c0, 1),
        "steps": result.steps,
        "best_val": result.best_val,
        "best_epoch": result.best_epoch,
        "settings": LIT_BASE,
    }


def train_base(args: argparse.Namespace, half_a: PreparedDataset, base_dir: Path) -> TrainResult:
    """The compact model's recipe (scripts/train_compact_flickr8k.py), shorter, on half A."""
    t0 = time.monotonic()
    base_cfg = TrainConfig(
        epochs=200,
        lr=1e-3,
        warmup_steps=30,
        captions_per_image=5,
        crop_scale=0.4,
        flip=True,
        weight_decay=0.2,
        time_budget_s=args.base_budget_min * 60,
        freeze="frozen-text" if "minilm" in args.config else "full",
        device="cpu",
    )
    base = train(start_model(args.config), half_a, base_dir, base_cfg)
    print(f"base on half A: {base.model_id} after {time.monotonic() - t0:.0f} s", flush=True)
    return base


class Log(Reporter):
    def log(self, message: str) -> None:
        print(time.strftime("%H:%M:%S"), message, flush=True)


def _base_summary(args: argparse.Namespace, half_a: PreparedDataset, base_dir: Path) -> dict:
    previous = results_dir() / ("finetune-experiments-lit.json" if "lit" in args.config else "")
    if args.reuse_base and previous.is_file() and (base_dir / "model.json").is_file():
        return json.loads(previous.read_text())["base"]
    if "lit" in args.config:
        return {**train_lit_base(args, half_a, base_dir), "dataset": half_a.name, "config": args.config}
    base = train_base(args, half_a, base_dir)
    return {
        "model_id": base.model_id,
        "dataset": half_a.name,
        "train_seconds": round(base.train_seconds, 1),
        "steps": base.steps,
        "best_val": base.best_val,
        "config": args.config,
    }


def main() -> None:
    args = arguments()
    if args.threads:
        torch.set_num_threads(args.threads)
    lit = "lit" in args.config
    half_a, half_b = make_halves()
    other = probe_of(half_a) if args.forgetting == "half-a-probe" else _synthetic()
    base_dir = models_dir() / ("lit-half-a" if lit else "compact-flickr8k-half-a")
    base = _base_summary(args, half_a, base_dir)
    results = {}
    for tag, overrides in (LIT_RUNS if lit else RUNS).items():
        if args.only and tag not in args.only:
            continue
        t0, c0 = time.monotonic(), time.process_time()
        summary = finetune(
            str(base_dir),
            half_b.name,
            name=f"ft-half-b-{tag}",
            forgetting_dataset=other,
            alphas=(0.0, 0.25, 0.5, 0.75, 1.0),
            time_budget_s=args.run_budget_min * 60 if args.run_budget_min else None,
            device="cpu",
            reporter=Log(),
            **({} if lit else {"epochs": args.epochs}),
            **overrides,
        )
        results[tag] = {
            **_brief(summary.to_json()),
            "wall_seconds": round(time.monotonic() - t0, 1),
            "cpu_seconds": round(time.process_time() - c0, 1),
        }
        print(tag, json.dumps(results[tag]), flush=True)
    path = results_dir() / ("finetune-experiments-lit.json" if lit else "finetune-experiments.json")
    previous = json.loads(path.read_text()) if path.is_file() else {}
    write_json(
        path,
        {
            "base": base,
            "finetune_dataset": half_b.name,
            "forgetting_dataset": other,
            "runs": {**previous.get("runs", {}), **results},
            "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "loadavg": os.getloadavg()},
        },
    )


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
