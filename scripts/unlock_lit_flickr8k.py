"""Partial unlocking of the saved capsearch-lit model's image trunk, kept only if val mean recall improves.

    CAPSEARCH_ARTIFACTS=artifacts python scripts/unlock_lit_flickr8k.py --model lit-lite2-flickr8k \
        --unlock 2 --budget-cpu-s 1200

1. The stem activations (the input of the last ``--unlock`` blocks; see core.train.lit_unlock) of every
   train and val image's clean view are computed once and cached in the embedding cache's layout.
2. Starting from the saved model (its trained heads and temperature), the unlocked blocks train at
   ``--block-lr`` and the heads at ``--head-lr`` (warmup + cosine over the budget, early stopping on val
   mean recall) for at most ``--budget-cpu-s`` process CPU seconds (1,200 CPU-s = 10 minutes of this
   machine's 2 cores; counted in CPU time because the machine is shared, and the wall time is recorded too).
3. If the best val mean recall beats the saved model's, the unlocked model replaces it (a new model id: its
   checkpoint holds the unlocked block weights); either way the outcome is appended to
   artifacts/results/lit-search-log.json and written to artifacts/results/lit-unlock.json.
"""

from __future__ import annotations

import argparse
import copy
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
from core.models.checkpoint import build_model, load_checkpoint_dir, save_checkpoint_dir  # noqa: E402
from core.models.towers import TOWERS_KEY  # noqa: E402
from core.paths import models_dir, results_dir  # noqa: E402
from core.train.frozen_features import split_features  # noqa: E402
from core.train.lit import LitConfig, val_metrics  # noqa: E402
from core.train.lit_unlock import stem_features, train_unlocked, with_rows  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_lit_flickr8k import REPORTER  # noqa: E402

from core.embed.tuning import cpu_model  # noqa: E402


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="lit-lite2-flickr8k")
    ap.add_argument("--dataset", default="flickr8k")
    ap.add_argument("--unlock", type=int, default=2, help="blocks to unlock (conv_head counts as one)")
    ap.add_argument("--block-lr", type=float, default=3e-5)
    ap.add_argument("--head-lr", type=float, default=1e-4)
    ap.add_argument("--budget-cpu-s", type=float, default=1200.0)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--no-save", action="store_true", help="record the val result only, keep the saved model")
    return ap.parse_args()


def _timed(fn: Any, *a: Any, **kw: Any) -> tuple[Any, dict[str, float]]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*a, **kw)
    return out, {
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(time.process_time() - c0, 1),
    }


def _entry(
    args: argparse.Namespace,
    meta: dict[str, Any],
    saved_id: str,
    baseline: dict[str, Any],
    result: Any,
    times: dict[str, Any],
) -> dict[str, Any]:
    """The search-log entry of an unlocking run (``kept`` and ``model_id`` are added by the caller)."""
    return {
        "config": meta["config"],
        "settings": {
            "unlocked_blocks": args.unlock,
            "block_lr": args.block_lr,
            "head_lr": args.head_lr,
            "budget_cpu_s": args.budget_cpu_s,
            "start": saved_id,
        },
        "views": 1,
        "val": {k: result.best_val[k] for k in ("mean_recall", "text_to_image", "image_to_text")},
        "val_before": {k: baseline[k] for k in ("mean_recall", "text_to_image", "image_to_text")},
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "stopped": result.stopped,
        "train_seconds": times["train"]["seconds"],
        "train_cpu_seconds": times["train"]["cpu_seconds"],
        "stem_cache": times["stem_cache"],
        "better_on_val": result.best_val["mean_recall"] > baseline["mean_recall"],
        "val_curve": result.curve,
        "loadavg": os.getloadavg(),
        "cpu": cpu_model(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def main() -> int:
    args = _args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    ds = load_dataset(args.dataset)
    saved, meta, saved_id = load_checkpoint_dir(models_dir() / args.model)
    cfg_model = copy.deepcopy(meta["model_cfg"])
    cfg_model[TOWERS_KEY]["unlocked_blocks"] = args.unlock
    model = build_model(cfg_model)
    model.load_state_dict(saved.state_dict(), strict=False)  # heads + temperature; the trunk is the package's
    feats = {
        s: split_features(model, cfg_model, meta["config"], ds, s, 1, reporter=REPORTER)
        for s in ("train", "val")
    }
    baseline = val_metrics(saved, feats["val"])
    REPORTER.log(f"saved model {saved_id}: val mean recall {baseline['mean_recall']:.2f}")
    rows, stem_time = {}, {}
    for s in ("train", "val"):
        rows[s], stem_time[s] = _timed(stem_features, model, cfg_model, ds, s, args.unlock, REPORTER)
    train, val = (with_rows(feats[s], rows[s]) for s in ("train", "val"))
    temperature = float(1.0 / model.logit_scale.detach().exp())
    cfg = LitConfig(
        epochs=100,
        lr=args.head_lr,
        warmup_steps=20,
        patience=args.patience,
        init_temperature=temperature,
        time_budget_s=args.budget_cpu_s,
    )
    size = int(cfg_model["vision_cfg"].get("image_size", 224))
    result, train_time = _timed(
        train_unlocked, model, train, val, cfg, args.unlock, args.block_lr, size, REPORTER
    )
    kept = result.best_val["mean_recall"] > baseline["mean_recall"] and not args.no_save
    model_id = None
    if kept:
        meta_out = {k: v for k, v in meta.items() if k not in ("model_cfg", "model_id")}
        meta_out.update(
            {
                "unlock": {
                    "blocks": args.unlock,
                    "block_lr": args.block_lr,
                    "head_lr": args.head_lr,
                    "start": saved_id,
                    "val_curve": result.curve,
                    "best_epoch": result.best_epoch,
                }
            }
        )
        model_id = save_checkpoint_dir(models_dir() / args.model, model, cfg_model, meta_out)
    entry = _entry(args, meta, saved_id, baseline, result, {"train": train_time, "stem_cache": stem_time})
    entry["kept"], entry["model_id"] = kept, model_id or saved_id
    log_path = results_dir() / "lit-search-log.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else []
    write_json(log_path, [*log, {k: v for k, v in entry.items() if k != "val_curve"}])
    write_json(results_dir() / "lit-unlock.json", entry)
    REPORTER.log(
        f"unlocked {args.unlock}: val mean recall {result.best_val['mean_recall']:.2f} vs "
        f"{baseline['mean_recall']:.2f} -> {'kept as ' + str(model_id) if kept else 'not kept'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
