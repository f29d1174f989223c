"""Locked-image (and locked-text) tuning: train only the projection heads of a ``capsearch_towers`` model on
cached frozen features (:mod:`core.train.frozen_features`), in minutes on a CPU.

Each step takes ``batch_size`` training images, one random cached view of each (clean or augmented), and
``captions_per_image`` of its captions (all five for Flickr8k; drawn with replacement when an image has
fewer), through the CLIP loss of :mod:`core.train.loss` (one image→text softmax over all captions of the
batch). AdamW, linear warmup then cosine (:mod:`core.train.schedule`), a learnable temperature clamped as
open_clip does, validation mean recall (:mod:`core.evaluation.recall`) after every epoch, early stopping,
and the best heads restored at the end. The checkpoint (:func:`core.models.checkpoint.save_checkpoint_dir`)
holds only the heads and the temperature: the towers come from their packages at load time.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.data.records import PreparedDataset
from core.evaluation.recall import mean_recall, recall_metrics
from core.models.checkpoint import save_checkpoint_dir
from core.models.towers import TOWERS_KEY, TowerSpec
from core.progress import Reporter, ensure
from core.train.frozen_features import AUG_MIN_SCALE, SplitFeatures, split_features
from core.train.loss import ClipLoss, clamp_logit_scale
from core.train.schedule import lr_factor
from core.train.setup import local_config


@dataclass
class LitConfig:
    """Head-training settings (architecture settings live in the model config's ``capsearch_towers``)."""

    epochs: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    patience: int = 5
    captions_per_image: int = 5
    views: int = 1  # cached views per training image: 1 clean + views-1 augmented
    min_scale: float = AUG_MIN_SCALE
    init_temperature: float = 0.07
    learn_temperature: bool = True
    time_budget_s: float | None = None
    feature_precision: str = "fp32"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class LitResult:
    """What a head-training run gives back."""

    best_epoch: int
    best_val: dict[str, Any]
    curve: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0
    stopped: str = "epochs"


def is_lit_config(name: str) -> bool:
    """True when ``name`` is a built-in config with package-supplied towers."""
    cfg = local_config(name)
    return cfg is not None and TOWERS_KEY in cfg


def _caption_table(caption_image: np.ndarray, n_images: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_images, k]`` caption indices per image (its first k, or drawn with replacement when fewer)."""
    owners: list[list[int]] = [[] for _ in range(n_images)]
    for c, i in enumerate(caption_image.tolist()):
        owners[i].append(c)
    table = np.zeros((n_images, k), dtype=np.int64)
    for i, caps in enumerate(owners):
        if not caps:
            table[i] = -1
        elif len(caps) >= k:
            table[i] = caps[:k]
        else:
            table[i] = rng.choice(caps, size=k, replace=True)
    return table


def encode_features(model: Any, feats: SplitFeatures, view: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image (view ``view``) and caption embeddings of cached features through the heads."""
    with torch.inference_mode():
        img = F.normalize(model.visual.head(torch.from_numpy(feats.images[view])), dim=-1)
        cap = F.normalize(model.text.proj(torch.from_numpy(feats.captions)), dim=-1)
    return img.numpy(), cap.numpy()


def val_metrics(model: Any, feats: SplitFeatures) -> dict[str, Any]:
    """Recall@1/5/10 both ways and their mean on a split's clean view."""
    was = model.training
    model.eval()
    img, cap = encode_features(model, feats)
    model.train(was)
    metrics: dict[str, Any] = recall_metrics(img, cap, feats.caption_image)
    metrics["mean_recall"] = mean_recall(metrics)
    return metrics


def head_modules(model: Any) -> list[nn.Module]:
    return [model.visual.head, model.text.proj]


def train_heads(
    model: Any,
    train: SplitFeatures,
    val: SplitFeatures,
    cfg: LitConfig,
    reporter: Reporter | None = None,
) -> LitResult:
    """Train the heads (and temperature) on cached features; the best epoch's weights are left in ``model``."""
    reporter = ensure(reporter)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for m in head_modules(model) for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1.0 / cfg.init_temperature))
    model.logit_scale.requires_grad_(cfg.learn_temperature)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay + ([model.logit_scale] if cfg.learn_temperature else []), "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    loss_fn = ClipLoss()
    n_views, n_images = train.images.shape[:2]
    table = _caption_table(train.caption_image, n_images, cfg.captions_per_image, rng)
    usable = np.flatnonzero(table[:, 0] >= 0)
    images = torch.from_numpy(train.images)
    captions = torch.from_numpy(train.captions)
    steps_per_epoch = max(1, len(usable) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    result = LitResult(best_epoch=0, best_val={})
    best_state: dict[str, torch.Tensor] | None = None
    best = -1.0
    bad = 0
    t0 = time.monotonic()
    for epoch in range(1, cfg.epochs + 1):
        for m in head_modules(model):
            m.train()
        order = rng.permutation(usable)
        losses = []
        for s in range(steps_per_epoch):
            reporter.check_cancelled()
            idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            view = torch.from_numpy(rng.integers(0, n_views, size=len(idx)))
            x = images[view, torch.from_numpy(idx)]
            caps = captions[torch.from_numpy(table[idx]).reshape(-1)]
            elapsed = time.monotonic() - t0
            progress = result.steps / total
            if cfg.time_budget_s:
                progress = max(progress, elapsed / cfg.time_budget_s)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * lr_factor(result.steps, cfg.warmup_steps, progress)
            img = F.normalize(model.visual.head(x), dim=-1)
            txt = F.normalize(model.text.proj(caps), dim=-1).view(len(idx), cfg.captions_per_image, -1)
            loss = loss_fn(img, txt, model.logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clamp_logit_scale(model)
            losses.append(float(loss.detach()))
            result.steps += 1
        metrics = val_metrics(model, val)
        point = {
            "epoch": epoch,
            "step": result.steps,
            "seconds": round(time.monotonic() - t0, 1),
            "train_loss": float(np.mean(losses)),
            "temperature": float(1.0 / model.logit_scale.exp()),
            "val_mean_recall": metrics["mean_recall"],
            "val_t2i_R@10": metrics["text_to_image"]["R@10"],
            "val_i2t_R@10": metrics["image_to_text"]["R@10"],
        }
        result.curve.append(point)
        reporter.log(
            f"epoch {epoch}: loss {point['train_loss']:.3f}, val mean recall {metrics['mean_recall']:.2f} "
            f"(t2i R@10 {point['val_t2i_R@10']:.1f}, i2t R@10 {point['val_i2t_R@10']:.1f})"
        )
        if metrics["mean_recall"] > best:
            best, bad = metrics["mean_recall"], 0
            result.best_epoch, result.best_val = epoch, metrics
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if cfg.patience and bad >= cfg.patience:
                result.stopped = "early-stopping"
                break
        if cfg.time_budget_s and time.monotonic() - t0 >= cfg.time_budget_s:
            result.stopped = "time-budget"
            break
    result.train_seconds = time.monotonic() - t0
    if best_state is not None:
        model.load_state_dict(best_state)
    for p in model.parameters():
        p.requires_grad_(False)
    return result


def lit_model_cfg(config_name: str, **tower_overrides: Any) -> dict[str, Any]:
    """The built-in config ``config_name`` with ``capsearch_towers`` entries replaced by ``tower_overrides``."""
    cfg = local_config(config_name)
    if cfg is None or TOWERS_KEY not in cfg:
        raise ValueError(f"{config_name} is not a config with package-supplied towers")
    cfg = copy.deepcopy(cfg)
    embed_dim = tower_overrides.pop("embed_dim", None)
    if embed_dim:
        cfg["embed_dim"] = int(embed_dim)
    cfg[TOWERS_KEY] = dataclasses.asdict(dataclasses.replace(TowerSpec(**cfg[TOWERS_KEY]), **tower_overrides))
    return cfg


def train_lit(
    config_name: str,
    dataset: PreparedDataset,
    out_dir: Path | None,
    cfg: LitConfig,
    reporter: Reporter | None = None,
    val_split: str = "val",
    **tower_overrides: Any,
) -> dict[str, Any]:
    """Build ``config_name`` (with ``tower_overrides``), cache frozen features, train the heads, and save
    the checkpoint to ``out_dir`` (when given). Returns a summary (no test figures: see ``capsearch eval``)."""
    reporter = ensure(reporter)
    model_cfg = lit_model_cfg(config_name, **tower_overrides)
    from core.models.checkpoint import build_model

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg)
    t0 = time.perf_counter()
    train = split_features(
        model,
        model_cfg,
        config_name,
        dataset,
        "train",
        cfg.views,
        cfg.feature_precision,
        reporter,
        min_scale=cfg.min_scale,
    )
    val = split_features(
        model, model_cfg, config_name, dataset, val_split, 1, cfg.feature_precision, reporter
    )
    feature_seconds = time.perf_counter() - t0
    result = train_heads(model, train, val, cfg, reporter)
    model_id = None
    if out_dir is not None:
        model_id = save_checkpoint_dir(
            out_dir,
            model,
            model_cfg,
            {
                "recipe": "lit",
                "config": config_name,
                "train_args": cfg.to_dict(),
                "dataset": dataset.name,
                "val_curve": result.curve,
                "best_epoch": result.best_epoch,
            },
        )
    return {
        "config": config_name,
        "model_cfg": model_cfg,
        "train_args": cfg.to_dict(),
        "dataset": dataset.name,
        "model": str(out_dir) if out_dir else None,
        "model_id": model_id,
        "feature_seconds": round(feature_seconds, 1),
        "features_reused": train.reused and val.reused,
        "train_seconds": round(result.train_seconds, 1),
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "val": result.best_val,
        "val_curve": result.curve,
    }
