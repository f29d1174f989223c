"""The recommended fine-tuning recipe: a short contrastive run at a low learning rate, then a WiSE-FT alpha
sweep on the val split; test recall is measured before and after (and, optionally, on a second dataset to
measure forgetting).

Recipe: CLIP loss, AdamW (lr 1e-5, weight decay 0.1), 20 warmup steps then cosine, batch 128, up to 5 epochs
with early stopping (patience 2), light random-crop augmentation; all layers train, except that a pretrained
Hugging Face text trunk stays frozen (its caption features are then computed once). Recall is measured in
the run's training precision.

The run's :class:`FinetuneSummary` is returned and written to ``results/finetune-<name>.json``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.atomic import write_json
from core.data.records import PreparedDataset, load_dataset
from core.errors import CapsearchError
from core.models.checkpoint import ClipModel, save_checkpoint_dir
from core.models.device import TRAINING_DEFAULT, Format, resolve_device, resolve_precision
from core.models.text_tower import hf_text_tower
from core.paths import models_dir, reports_dir, results_dir, safe_name
from core.progress import Reporter, ensure
from core.train import wise_ft
from core.train.freeze import apply_freeze
from core.train.lit_finetune import LitFinetuneRun, finetune_heads, is_lit_start
from core.train.report import plot_alpha, plot_curves
from core.train.setup import StartModel, start_model
from core.train.text import has_frozen_hf_trunk
from core.train.trainer import TrainConfig, TrainResult, load_best, train
from core.train.validation import SplitData, evaluate, flat_metrics

SUMMARY_FORMAT = 1


@dataclass
class FinetuneSummary:
    """What a fine-tuning run did and measured (recall dicts as :func:`core.train.validation.evaluate`)."""

    name: str
    start: str
    model_id: str
    dataset: str
    config: dict[str, Any]
    text_trunk_frozen: bool
    seconds: float
    steps: int
    best_epoch: float | None
    stopped: str
    wise_ft_alpha: float
    wise_ft_curve: list[dict[str, Any]]
    val_curve: list[dict[str, Any]]
    test_before: dict[str, Any]
    test_after: dict[str, Any]
    test_after_alpha1: dict[str, Any]  # alpha = 1: the fine-tuned weights alone
    forgetting_dataset: str | None = None
    forgetting_before: dict[str, Any] | None = None
    forgetting_after: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format_version": SUMMARY_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FinetuneSummary:
        version = data.get("format_version")
        if version != SUMMARY_FORMAT:
            raise CapsearchError(
                f"fine-tuning summary format {version!r} is not {SUMMARY_FORMAT}",
                hint="it was written by another capsearch version; rerun the fine-tuning",
            )
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


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


def resolve_freeze(policy: str, model: ClipModel) -> str:
    if policy != "auto":
        return policy
    return "frozen-text" if hf_text_tower(model) is not None else "full"


@dataclass
class _Measures:
    """The splits a fine-tuning run measures recall on, and the device and format it measures in."""

    device: torch.device
    fmt: Format
    test: SplitData
    val: SplitData
    other: SplitData | None

    @classmethod
    def load(
        cls,
        start: StartModel,
        dataset: PreparedDataset,
        cfg: TrainConfig,
        forgetting_dataset: str | None,
        reporter: Reporter,
    ) -> _Measures:
        device = resolve_device(cfg.device)
        fmt = resolve_precision(device, cfg.precision, TRAINING_DEFAULT)
        test = SplitData.load(start, dataset, "test", device, reporter)
        val = SplitData.load(start, dataset, cfg.val_split, device, reporter)
        other = None
        if forgetting_dataset:
            other = SplitData.load(start, load_dataset(forgetting_dataset), "test", device, reporter)
        return cls(device, fmt, test, val, other)

    def test_recall(self, model: ClipModel) -> dict[str, Any]:
        return evaluate(model, self.test, self.device, self.fmt)

    def forgetting_recall(self, model: ClipModel) -> dict[str, Any] | None:
        return evaluate(model, self.other, self.device, self.fmt) if self.other else None

    def val_score(self, model: ClipModel) -> tuple[float, dict[str, Any]]:
        metrics = evaluate(model, self.val, self.device, self.fmt)
        return metrics["mean_recall"], flat_metrics(metrics)


def _recipe_start(model: str, pretrained: str | None, cfg: TrainConfig) -> tuple[StartModel, TrainConfig]:
    """The starting model with the recipe's freezing applied (so that a frozen Hugging Face trunk's caption
    features are computed once) and the config with that policy resolved."""
    start = start_model(model, pretrained, device=resolve_device(cfg.device), seed=cfg.seed)
    cfg = dataclasses.replace(cfg, freeze=resolve_freeze(cfg.freeze, start.model))
    apply_freeze(start.model, cfg.freeze)
    return start, cfg


def _write_outputs(summary: FinetuneSummary) -> None:
    """The summary file and the run's plots."""
    name = summary.name
    write_json(results_dir() / f"finetune-{name}.json", summary.to_json())
    if summary.val_curve:
        plot_curves({name: summary.val_curve}, reports_dir() / f"finetune-{name}.png", f"fine-tuning {name}")
    plot_alpha(summary.wise_ft_curve, reports_dir() / f"wise-ft-{name}.png", f"WiSE-FT alpha sweep: {name}")


def _save_model(
    out: Path,
    start: StartModel,
    ds: PreparedDataset,
    cfg: TrainConfig,
    result: TrainResult,
    sweep: wise_ft.WiseFtResult,
) -> str:
    """Save the fine-tuned model (its weights as they are now: the best WiSE-FT mix) into ``out`` with the
    recipe's metadata; returns its model id."""
    meta = {
        "train_args": cfg.to_dict(),
        "dataset": ds.name,
        "start": start.start_id,
        "wise_ft_alpha": sweep.best_alpha,
        "wise_ft_curve": sweep.curve,
        "val_curve": result.curve,
        "recipe": "finetune",
    }
    return save_checkpoint_dir(out, start.model, start.model_cfg, meta)


def _lit_summary(
    name: str,
    out: Path,
    start: StartModel,
    ds: PreparedDataset,
    run: LitFinetuneRun,
    forgetting_dataset: str | None,
) -> FinetuneSummary:
    """Save a head fine-tuning run's model (:mod:`core.train.lit_finetune`) and write its summary."""
    curve = [
        {
            "epoch": row["epoch"],
            "train_loss": row["train_loss"],
            "mean_recall": row["val_mean_recall"],
            "t2i_R@10": row["val_t2i_R@10"],
            "i2t_R@10": row["val_i2t_R@10"],
        }
        for row in run.val_curve
    ]
    meta = {
        "train_args": run.cfg.to_dict(),
        "dataset": ds.name,
        "start": start.start_id,
        "wise_ft_alpha": run.sweep.best_alpha,
        "wise_ft_curve": run.sweep.curve,
        "val_curve": curve,
        "recipe": "finetune-lit",
    }
    summary = FinetuneSummary(
        name=name,
        start=start.start_id,
        model_id=save_checkpoint_dir(out, start.model, start.model_cfg, meta),
        dataset=ds.name,
        config=run.cfg.to_dict(),
        text_trunk_frozen=True,
        seconds=round(run.seconds, 1),
        steps=run.steps,
        best_epoch=run.best_epoch,
        stopped=run.stopped,
        wise_ft_alpha=run.sweep.best_alpha,
        wise_ft_curve=run.sweep.curve,
        val_curve=curve,
        test_before=run.test_before,
        test_after=run.test_after,
        test_after_alpha1=run.test_after_alpha1,
        forgetting_dataset=forgetting_dataset,
        forgetting_before=run.forgetting_before,
        forgetting_after=run.forgetting_after,
    )
    _write_outputs(summary)
    return summary


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
) -> FinetuneSummary:
    """Fine-tune ``model`` on ``dataset`` with the recipe; returns (and writes under results/) a summary with
    test recall before and after, the val curve, the WiSE-FT alpha curve and forgetting when asked. A
    capsearch-lit checkpoint fine-tunes its heads on cached frozen features (:mod:`core.train.lit_finetune`)."""
    reporter = ensure(reporter)
    start, cfg = _recipe_start(model, pretrained, recommended_config(**overrides))
    ds = load_dataset(dataset)
    name = name or safe_name(f"ft-{Path(model).name}-{ds.name}")
    out = models_dir() / name
    if is_lit_start(start):
        run = finetune_heads(start, ds, overrides, forgetting_dataset, alphas, reporter)
        return _lit_summary(name, out, start, ds, run, forgetting_dataset)
    trunk_frozen = has_frozen_hf_trunk(start.model)
    measures = _Measures.load(start, ds, cfg, forgetting_dataset, reporter)
    reporter.log("measuring recall before fine-tuning")
    before = measures.test_recall(start.model)
    other_before = measures.forgetting_recall(start.model)
    theta0 = wise_ft.cpu_state(start.model)

    t0 = time.monotonic()
    result = train(start, ds, out, cfg, reporter, meta={"recipe": "finetune"}, resume=resume)
    load_best(start.model, out)
    theta1 = wise_ft.cpu_state(start.model)
    after_alpha1 = measures.test_recall(start.model)
    sweep = wise_ft.sweep(start.model, theta0, theta1, measures.val_score, alphas, reporter)
    seconds = time.monotonic() - t0
    summary = FinetuneSummary(
        name=name,
        start=start.start_id,
        model_id=_save_model(out, start, ds, cfg, result, sweep),
        dataset=ds.name,
        config=cfg.to_dict(),
        text_trunk_frozen=trunk_frozen,
        seconds=round(seconds, 1),
        steps=result.steps,
        best_epoch=result.best_epoch,
        stopped=result.stopped,
        wise_ft_alpha=sweep.best_alpha,
        wise_ft_curve=sweep.curve,
        val_curve=result.curve,
        test_before=before,
        test_after=measures.test_recall(start.model),
        test_after_alpha1=after_alpha1,
        forgetting_dataset=forgetting_dataset,
        forgetting_before=other_before,
        forgetting_after=measures.forgetting_recall(start.model),
    )
    _write_outputs(summary)
    return summary
