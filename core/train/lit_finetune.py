"""Fine-tuning a capsearch-lit checkpoint (package-supplied frozen trunks, trained heads): the recipe of
:mod:`core.train.recipes` on cached frozen features.

``capsearch finetune`` reaches this module when the starting model is a checkpoint whose config has
package-supplied towers and no unlocked trunk blocks. Only the heads (and the temperature) can change, so
the run trains them on the trunks' cached features (:mod:`core.train.frozen_features`) instead of running
the trunks every step: a short run at a lower learning rate than the heads' first training, early stopping
on val mean recall, the best epoch kept, then the WiSE-FT alpha sweep on val (:mod:`core.train.wise_ft`).
Test recall before and after, and forgetting on a second dataset, are measured on the cached features of
those splits through the heads, which is what the model computes on the images (the heads normalise their
inputs; see :mod:`core.train.frozen_features`).

A dataset made from another prepared dataset's images (``"parent"`` in its ``dataset.json``, as the halves
of ``scripts/finetune_experiments.py``) borrows the parent's cached rows by image id instead of running the
trunks again.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np

from core.data.records import PreparedDataset, load_dataset
from core.errors import DatasetError
from core.models.towers import TowerSpec
from core.progress import Reporter, ensure
from core.train import wise_ft
from core.train.frozen_features import SplitFeatures, split_features
from core.train.lit import LitConfig, train_heads, val_metrics
from core.train.setup import StartModel
from core.train.validation import flat_metrics

RECIPE = {"epochs": 10, "lr": 2e-4, "warmup_steps": 10, "patience": 3, "batch_size": 256}
"""The lit recipe's head-training settings (the heads' first training uses lr 1e-3)."""


def is_lit_start(start: StartModel) -> bool:
    """True for a model with package-supplied trunks, both frozen (no unlocked image blocks)."""
    spec = TowerSpec.from_cfg(start.model_cfg)
    return spec is not None and bool(spec.image_package and spec.text_package) and spec.unlocked_blocks == 0


def _pick(pool: SplitFeatures, rows: list[int]) -> SplitFeatures:
    """The rows ``rows`` of ``pool`` (images and their captions, in that order)."""
    starts = np.searchsorted(pool.caption_image, np.arange(len(pool.records) + 1))
    caps = [np.arange(starts[r], starts[r + 1]) for r in rows]
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), [len(c) for c in caps])
    flat = np.concatenate(caps) if caps else np.zeros(0, np.int64)
    return SplitFeatures(
        images=pool.images[:, rows],
        captions=pool.captions[flat],
        caption_image=owner,
        records=[pool.records[r] for r in rows],
        seconds=pool.seconds,
        reused=pool.reused,
    )


def features(start: StartModel, dataset: PreparedDataset, split: str, reporter: Reporter) -> SplitFeatures:
    """The clean-view features of ``dataset``'s ``split``: borrowed by image id from the parent dataset's
    cached splits when the dataset names a parent, else computed (or reused) for the dataset itself."""
    config = str(start.model_cfg.get("capsearch_config", start.start_id))
    parent_name = dataset.meta.get("parent")
    if not parent_name:
        return split_features(start.model, start.model_cfg, config, dataset, split, 1, reporter=reporter)
    parent = load_dataset(str(parent_name))
    wanted = {r.id: r for r in dataset.split(split)}
    found: dict[str, tuple[SplitFeatures, int]] = {}
    for parent_split in parent.meta.get("splits", {}):
        ids = {r.id for r in parent.split(parent_split)}
        if ids & (wanted.keys() - found.keys()):
            pool = features(start, parent, parent_split, reporter)
            found.update({r.id: (pool, i) for i, r in enumerate(pool.records) if r.id in wanted})
    missing = [i for i in wanted if i not in found or found[i][0].records[found[i][1]] != wanted[i]]
    if missing:
        raise DatasetError(f"{len(missing)} images of {dataset.name}/{split} differ from {parent.name}'s")
    pools = {id(p): p for p, _ in found.values()}
    parts = [_pick(pools[k], [found[r][1] for r in wanted if id(found[r][0]) == k]) for k in pools]
    order = {rid: i for i, rid in enumerate(wanted)}
    merged = _concat(parts)
    return _pick(merged, sorted(range(len(merged.records)), key=lambda i: order[merged.records[i].id]))


def _concat(parts: list[SplitFeatures]) -> SplitFeatures:
    offsets = np.cumsum([0] + [len(p.records) for p in parts])
    return SplitFeatures(
        images=np.concatenate([p.images for p in parts], axis=1),
        captions=np.concatenate([p.captions for p in parts]),
        caption_image=np.concatenate([p.caption_image + o for p, o in zip(parts, offsets, strict=False)]),
        records=[r for p in parts for r in p.records],
        seconds=sum(p.seconds for p in parts),
        reused=all(p.reused for p in parts),
    )


@dataclasses.dataclass
class LitFinetuneRun:
    """What :func:`finetune_heads` measured, in the shape :class:`core.train.recipes.FinetuneSummary` needs."""

    cfg: LitConfig
    seconds: float
    steps: int
    best_epoch: int
    stopped: str
    sweep: wise_ft.WiseFtResult
    val_curve: list[dict[str, Any]]
    test_before: dict[str, Any]
    test_after: dict[str, Any]
    test_after_alpha1: dict[str, Any]
    forgetting_before: dict[str, Any] | None
    forgetting_after: dict[str, Any] | None


SHARED = ("epochs", "lr", "warmup_steps", "weight_decay", "patience", "seed", "time_budget_s")
"""The generic recipe's options that apply to head fine-tuning (batch size, captions per step, crops, loss
and precision are the lit recipe's own: every caption per image, cached clean features, CLIP loss, fp32)."""


def lit_config(start: StartModel, overrides: dict[str, Any]) -> LitConfig:
    """The recipe's :class:`LitConfig` with the :data:`SHARED` entries of ``overrides``, starting from the
    model's temperature."""
    known = {k: v for k, v in overrides.items() if k in SHARED and v is not None}
    temperature = 1.0 / math.exp(float(start.model.logit_scale.detach()))
    return LitConfig(**{**RECIPE, "init_temperature": temperature, **known})


def finetune_heads(
    start: StartModel,
    dataset: PreparedDataset,
    overrides: dict[str, Any],
    forgetting_dataset: str | None,
    alphas: tuple[float, ...],
    reporter: Reporter | None = None,
) -> LitFinetuneRun:
    """Fine-tune ``start``'s heads on ``dataset`` (train split), keep the best val epoch, sweep WiSE-FT on
    val; the chosen weights are left in ``start.model``."""
    reporter = ensure(reporter)
    cfg = lit_config(start, overrides)
    train = features(start, dataset, "train", reporter)
    val = features(start, dataset, str(overrides.get("val_split") or "val"), reporter)
    test = features(start, dataset, "test", reporter)
    other = (
        features(start, load_dataset(forgetting_dataset), "test", reporter) if forgetting_dataset else None
    )
    model = start.model
    before, other_before = val_metrics(model, test), val_metrics(model, other) if other else None
    theta0 = wise_ft.cpu_state(model)
    t0 = time.monotonic()
    result = train_heads(model, train, val, cfg, reporter)
    theta1 = wise_ft.cpu_state(model)
    after_alpha1 = val_metrics(model, test)

    def score(m: Any) -> tuple[float, dict[str, Any]]:
        metrics = val_metrics(m, val)
        return metrics["mean_recall"], flat_metrics(metrics)

    sweep = wise_ft.sweep(model, theta0, theta1, score, alphas, reporter)
    return LitFinetuneRun(
        cfg=cfg,
        seconds=time.monotonic() - t0,
        steps=result.steps,
        best_epoch=result.best_epoch,
        stopped=result.stopped,
        sweep=sweep,
        val_curve=result.curve,
        test_before=before,
        test_after=val_metrics(model, test),
        test_after_alpha1=after_alpha1,
        forgetting_before=other_before,
        forgetting_after=val_metrics(model, other) if other else None,
    )
