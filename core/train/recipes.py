"""The recommended fine-tuning recipe: a short contrastive run at a low learning rate, then a WiSE-FT alpha
sweep on the val split; test recall is measured before and after (and, optionally, on a second dataset to
measure forgetting).

Recipe: CLIP loss, AdamW (lr 1e-5, weight decay 0.1), 20 warmup steps then cosine, batch 128, up to 5 epochs
with early stopping (patience 2), light random-crop augmentation; all layers train, except that a pretrained
Hugging Face text trunk stays frozen (its caption features are then computed once).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from core.atomic import write_json
from core.data.records import load_dataset
from core.models.checkpoint import hf_text_tower
from core.paths import models_dir, reports_dir, results_dir, safe_name
from core.progress import Reporter, ensure
from core.train import wise_ft
from core.train.report import plot_alpha, plot_curves
from core.train.setup import start_model
from core.train.text import has_frozen_hf_trunk
from core.train.trainer import (
    SplitData,
    TrainConfig,
    evaluate,
    flat_metrics,
    load_best,
    resolve_device,
    save_checkpoint,
    train,
)


def recommended_config(**overrides: Any) -> TrainConfig:
    """The recipe's training arguments, with ``overrides`` applied (unknown names are an error)."""
    base = TrainConfig(
        epochs=5,
        lr=1e-5,
        warmup_steps=20,
        batch_size=128,
        weight_decay=0.1,
        patience=2,
        crop_scale=0.8,
        freeze="auto",
    )
    return dataclasses.replace(base, **overrides)


def resolve_freeze(policy: str, model: torch.nn.Module) -> str:
    if policy != "auto":
        return policy
    return "frozen-text" if hf_text_tower(model) is not None else "full"


def finetune(
    model: str,
    dataset: str,
    pretrained: str | None = None,
    name: str | None = None,
    forgetting_dataset: str | None = None,
    alphas: tuple[float, ...] = wise_ft.DEFAULT_ALPHAS,
    reporter: Reporter | None = None,
    resume: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Fine-tune ``model`` on ``dataset`` with the recipe; returns (and writes under results/) a summary with
    test recall before and after, the val curve, the WiSE-FT alpha curve and forgetting when asked."""
    reporter = ensure(reporter)
    cfg = recommended_config(**overrides)
    device = resolve_device(cfg.device)
    start = start_model(model, pretrained, device=device, seed=cfg.seed)
    cfg = dataclasses.replace(cfg, freeze=resolve_freeze(cfg.freeze, start.model))
    ds = load_dataset(dataset)
    name = name or safe_name(f"ft-{Path(model).name}-{ds.name}")
    out = models_dir() / name
    from core.train.freeze import apply_freeze

    apply_freeze(start.model, cfg.freeze)  # so that a frozen HF trunk's caption features are computed once
    trunk_frozen = has_frozen_hf_trunk(start.model)
    test = SplitData.load(start, ds, "test", device, reporter)
    val = SplitData.load(start, ds, cfg.val_split, device, reporter)
    other = None
    if forgetting_dataset:
        other_ds = load_dataset(forgetting_dataset)
        other = SplitData.load(start, other_ds, "test", device, reporter)
    reporter.log("measuring recall before fine-tuning")
    before = evaluate(start.model, test, device, cfg.precision)
    other_before = evaluate(start.model, other, device, cfg.precision) if other else None
    theta0 = wise_ft.cpu_state(start.model)

    t0 = time.monotonic()
    result = train(start, ds, out, cfg, reporter, meta={"recipe": "finetune"}, resume=resume)
    load_best(start.model, out)
    theta1 = wise_ft.cpu_state(start.model)
    after_raw = evaluate(start.model, test, device, cfg.precision)  # alpha = 1: the fine-tuned weights alone

    def score(m: torch.nn.Module) -> tuple[float, dict[str, Any]]:
        metrics = evaluate(m, val, device, cfg.precision)
        return metrics["mean_recall"], flat_metrics(metrics)

    sweep = wise_ft.sweep(start.model, theta0, theta1, score, alphas, reporter)
    seconds = time.monotonic() - t0
    after = evaluate(start.model, test, device, cfg.precision)
    other_after = evaluate(start.model, other, device, cfg.precision) if other else None
    model_id = save_checkpoint(
        start.model,
        out,
        start.model_cfg,
        {
            "train_args": cfg.to_dict(),
            "dataset": ds.name,
            "start": start.start_id,
            "wise_ft_alpha": sweep.best_alpha,
            "wise_ft_curve": sweep.curve,
            "val_curve": result.curve,
            "recipe": "finetune",
        },
    )
    summary = {
        "name": name,
        "start": start.start_id,
        "model_id": model_id,
        "dataset": ds.name,
        "config": cfg.to_dict(),
        "text_trunk_frozen": trunk_frozen,
        "seconds": round(seconds, 1),
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "wise_ft_alpha": sweep.best_alpha,
        "wise_ft_curve": sweep.curve,
        "val_curve": result.curve,
        "test_before": before,
        "test_after": after,
        "test_after_alpha1": after_raw,
        "forgetting_dataset": forgetting_dataset,
        "forgetting_before": other_before,
        "forgetting_after": other_after,
    }
    write_json(results_dir() / f"finetune-{name}.json", summary)
    if result.curve:
        plot_curves({name: result.curve}, reports_dir() / f"finetune-{name}.png", f"fine-tuning {name}")
    plot_alpha(sweep.curve, reports_dir() / f"wise-ft-{name}.png", f"WiSE-FT alpha sweep: {name}")
    return summary
