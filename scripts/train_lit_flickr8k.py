"""Train a capsearch-lit model on Flickr8k: cache frozen features, search head settings on val, keep the best.

    CAPSEARCH_ARTIFACTS=artifacts python scripts/train_lit_flickr8k.py --config capsearch-lit-lite2 \
        --views 1 [--partial] [--grid quick]

1. Frozen features (cached, resumable; see core.train.frozen_features): ``--views`` views of each train
   image (1 clean + views-1 augmented) and one clean view of each val image, plus every caption. With
   ``--partial`` nothing is computed: training uses the leading train images whose features are cached
   (when the frozen pass could not finish in the time available; the summary says how many).
2. Every configuration of the grid trains on the cached features and is scored on val only; each is appended
   to ``artifacts/results/lit-search-log.json``.
3. The configuration with the best val mean recall is trained again and saved as a checkpoint
   (``artifacts/models/<name>``); ``artifacts/results/train-lit-<name>.json`` holds the summary. Test figures
   come from ``capsearch eval --dataset flickr8k --model <name> --precision fp32`` afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.atomic import write_json  # noqa: E402
from core.data.records import load_dataset  # noqa: E402
from core.embed.tuning import cpu_model  # noqa: E402
from core.models.checkpoint import build_model, save_checkpoint_dir  # noqa: E402
from core.paths import models_dir, results_dir  # noqa: E402
from core.progress import Reporter  # noqa: E402
from core.train.frozen_features import (  # noqa: E402
    SplitFeatures,
    cached_prefix_features,
    split_features,
)
from core.train.lit import (  # noqa: E402
    LitConfig,
    LitResult,
    lit_checkpoint_meta,
    lit_model_cfg,
    train_heads,
)

GRIDS: dict[str, list[dict[str, Any]]] = {
    "small": [{"head_dropout": 0.1}, {"head_dropout": 0.3}, {"head_dropout": 0.1, "weight_decay": 0.5}],
    "quick": [
        {"head_dropout": 0.1},
        {"head_dropout": 0.3},
        {"head_dropout": 0.1, "lr": 5e-4},
        {"head_dropout": 0.1, "weight_decay": 0.5},
        {"head_dropout": 0.3, "head_hidden": 2048},
        {"head_dropout": 0.1, "learn_temperature": False, "init_temperature": 0.05},
        {"head_dropout": 0.0},
    ],
}
TOWER_KEYS = {"head_dropout", "head_hidden", "embed_dim"}


class Log(Reporter):
    def log(self, message: str) -> None:
        print(time.strftime("%H:%M:%S"), message, flush=True)


REPORTER = Log()


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="capsearch-lit-lite2")
    ap.add_argument("--dataset", default="flickr8k")
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--partial", action="store_true", help="train on the cached leading train images only")
    ap.add_argument("--grid", default="quick", choices=sorted(GRIDS))
    ap.add_argument("--settings", help="a JSON list of settings to try instead of a named grid")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=3, help="epochs without val gain before stopping")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for head training (default 1)")
    ap.add_argument("--name", help="checkpoint name (default lit-<backbone>-<dataset>)")
    ap.add_argument(
        "--only-if-better",
        action="store_true",
        help="keep the existing checkpoint unless the best trial beats its val mean recall",
    )
    return ap.parse_args()


@dataclasses.dataclass
class Trial:
    """One grid entry trained on the cached features: its val score and what to save if it is the best."""

    score: float
    settings: dict[str, Any]
    model_cfg: dict[str, Any]
    cfg: LitConfig
    model: Any
    result: LitResult
    cpu_seconds: float


def _try(
    args: argparse.Namespace, settings: dict[str, Any], train: SplitFeatures, val: SplitFeatures
) -> Trial:
    """Train the heads with ``settings`` (tower and training entries) and append the outcome to the log."""
    towers = {k: v for k, v in settings.items() if k in TOWER_KEYS}
    train_args = {k: v for k, v in settings.items() if k not in TOWER_KEYS}
    cfg = dataclasses.replace(
        LitConfig(epochs=args.epochs, views=args.views, patience=args.patience, threads=args.threads),
        **train_args,
    )
    model_cfg = lit_model_cfg(args.config, **towers)
    torch.manual_seed(cfg.seed)
    m = build_model(model_cfg)
    cpu0 = time.process_time()
    result = train_heads(m, train, val, cfg, REPORTER)
    cpu_seconds = time.process_time() - cpu0
    entry = {
        "config": args.config,
        "settings": settings,
        "views": args.views,
        "train_images": len(train.records),
        "view_coverage": train.view_coverage or [len(train.records)] * args.views,
        "val": {k: result.best_val[k] for k in ("mean_recall", "text_to_image", "image_to_text")},
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "epochs": cfg.epochs,
        "patience": cfg.patience,
        "warmup_steps": cfg.warmup_steps,
        "stopped": result.stopped,
        "train_seconds": round(result.train_seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "loadavg": os.getloadavg(),
        "cpu": cpu_model(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    log_path = results_dir() / "lit-search-log.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else []  # other runs may have added
    write_json(log_path, [*log, entry])
    REPORTER.log(
        f"{settings}: val mean recall {entry['val']['mean_recall']:.2f} in {entry['train_seconds']} s"
    )
    return Trial(result.best_val["mean_recall"], settings, model_cfg, cfg, m, result, cpu_seconds)


def _previous_val(name: str) -> float | None:
    """Val mean recall of the checkpoint ``name`` already saved (from its summary), or None."""
    path = results_dir() / f"train-lit-{name}.json"
    if not (models_dir() / name).is_dir() or not path.is_file():
        return None
    return float(json.loads(path.read_text())["val"]["mean_recall"])


def _summary(
    args: argparse.Namespace, best: Trial, train: SplitFeatures, name: str, model_id: str
) -> dict[str, Any]:
    cfg, result = best.cfg, best.result
    return {
        "name": name,
        "model_id": model_id,
        "config": args.config,
        "chosen_settings": best.settings,
        "chosen_by": "best val mean recall (mean of R@1/5/10 both ways) over the grid; test not looked at",
        "train_args": cfg.to_dict(),
        "model_cfg": best.model_cfg,
        "views": args.views,
        "train_images": len(train.records),
        "view_coverage": train.view_coverage or [len(train.records)] * args.views,
        "partial": args.partial,
        "chosen_train_seconds": round(result.train_seconds, 1),
        "chosen_train_cpu_seconds": round(best.cpu_seconds, 1),
        "stopped": result.stopped,
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "val": result.best_val,
        "val_curve": result.curve,
    }


def main() -> int:
    args = _args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    ds = load_dataset(args.dataset)
    base_cfg = lit_model_cfg(args.config)
    model = build_model(base_cfg)
    t0, cpu0 = time.perf_counter(), time.process_time()
    if args.partial:
        train = cached_prefix_features(base_cfg, ds, "train", args.views)
    else:
        train = split_features(model, base_cfg, args.config, ds, "train", args.views, reporter=REPORTER)
    val = split_features(model, base_cfg, args.config, ds, "val", 1, reporter=REPORTER)
    features = {
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
    }
    REPORTER.log(
        f"train images {train.images.shape}, captions {train.captions.shape}; val {val.images.shape}"
    )
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "loadavg_start": os.getloadavg()}
    search_t0 = time.perf_counter()
    grid = json.loads(args.settings) if args.settings else GRIDS[args.grid]
    tried = [_try(args, settings, train, val) for settings in grid]
    search_seconds = time.perf_counter() - search_t0
    best = max(tried, key=lambda t: t.score)
    backbone = best.model_cfg["vision_cfg"]["timm_model_name"].removeprefix("tf_efficientnet_")
    name = args.name or f"lit-{backbone}-{ds.name}"
    previous = _previous_val(name) if args.only_if_better else None
    if previous is not None and best.score <= previous:
        REPORTER.log(f"best val mean recall {best.score:.2f} <= saved {previous:.2f}: {name} kept as it is")
        return 0
    out = models_dir() / name
    meta = {
        **lit_checkpoint_meta(args.config, best.cfg, ds.name, best.result),
        "train_images": len(train.records),
    }
    model_id = save_checkpoint_dir(out, best.model, best.model_cfg, meta)
    summary = {
        **_summary(args, best, train, name, model_id),
        "train_images_total": len(ds.split("train")),
        "replaced_val_mean_recall": previous,
        "feature_load": features,
        "search_seconds_all_configs": round(search_seconds, 1),
        "configs_tried": len(tried),
        "machine": {**machine, "loadavg_end": os.getloadavg(), "torch_threads": torch.get_num_threads()},
    }
    write_json(results_dir() / f"train-lit-{name}.json", summary)
    REPORTER.log(f"chosen {best.settings}: val mean recall {best.score:.2f}; saved {out} ({model_id})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
