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
from core.train.schedule import lr_factor, progress_of
from core.train.setup import local_config
from core.train.trainer import LoopConfig, TrainState


@dataclass
class LitConfig(LoopConfig):
    """Head-training settings (architecture settings live in the model config's ``capsearch_towers``): the
    shared loop settings with LiT's defaults (heads train fast: more epochs, larger batches, every caption),
    then its own."""

    epochs: int = 40
    batch_size: int = 256
    patience: int = 5
    captions_per_image: int = 5
    views: int = 1
    """Cached views per training image: 1 clean + ``views - 1`` augmented."""
    min_scale: float = AUG_MIN_SCALE
    """Smallest crop area of the augmented views."""
    init_temperature: float = 0.07
    learn_temperature: bool = True
    feature_precision: str = "fp32"
    """Number format of the frozen forward pass that computes the cached features."""
    threads: int = 1
    """Intra-op threads while training on cached features: the heads are small, and on a shared 2-core CPU
    two threads spent about 4x the CPU time of one in spin-waits (0.82 vs 0.19 CPU-s per step, load 15)."""


@dataclass
class LitResult:
    """What a head-training run gives back."""

    best_epoch: int
    best_val: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)
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


def _head_optimizer(model: Any, cfg: LitConfig) -> torch.optim.AdamW:
    """Freeze all but the heads (and the temperature when learnt); AdamW over them, no decay on 1-d tensors."""
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
    return torch.optim.AdamW(groups, lr=cfg.lr)


class _HeadTrainer:
    """One :func:`train_heads` run: where it stands is a :class:`~core.train.trainer.TrainState`; each epoch
    is :meth:`_epoch` (its steps are :meth:`_step`) then :meth:`_validate`."""

    clock = staticmethod(time.monotonic)
    """What the time budget is measured on (wall time; a subclass may count process CPU time)."""

    def __init__(self, model: Any, train: SplitFeatures, cfg: LitConfig, reporter: Reporter) -> None:
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.model = model
        self.cfg = cfg
        self.reporter = reporter
        self.opt = self._optimizer()
        self.loss_fn = ClipLoss()
        self.n_views, n_images = train.images.shape[:2]
        self.table = _caption_table(train.caption_image, n_images, cfg.captions_per_image, self.rng)
        self.usable = np.flatnonzero(self.table[:, 0] >= 0)
        self.images = torch.from_numpy(train.images)
        self.captions = torch.from_numpy(train.captions)
        self.steps_per_epoch = max(1, len(self.usable) // cfg.batch_size)
        self.total = self.steps_per_epoch * cfg.epochs
        self.state = TrainState()
        self.best_state: dict[str, torch.Tensor] | None = None
        self.t0 = self.clock()

    def _optimizer(self) -> torch.optim.Optimizer:
        return _head_optimizer(self.model, self.cfg)

    def _embed_images(self, x: torch.Tensor) -> torch.Tensor:
        """Training-time image embeddings of cached rows ``x`` (not normalised)."""
        return self.model.visual.head(x)

    def _val_metrics(self, val: SplitFeatures) -> dict[str, Any]:
        return val_metrics(self.model, val)

    def _step(self, idx: np.ndarray) -> float:
        """One optimizer step on the training images ``idx``; returns its loss."""
        cfg, model, state = self.cfg, self.model, self.state
        self.reporter.check_cancelled()
        view = torch.from_numpy(self.rng.integers(0, self.n_views, size=len(idx)))
        x = self.images[view, torch.from_numpy(idx)]
        caps = self.captions[torch.from_numpy(self.table[idx]).reshape(-1)]
        progress = progress_of(state.step, self.total, self.clock() - self.t0, cfg.time_budget_s)
        for g in self.opt.param_groups:
            g["lr"] = g.get("base_lr", cfg.lr) * lr_factor(state.step, cfg.warmup_steps, progress)
        img = F.normalize(self._embed_images(x), dim=-1)
        txt = F.normalize(model.text.proj(caps), dim=-1).view(len(idx), cfg.captions_per_image, -1)
        loss = self.loss_fn(img, txt, model.logit_scale)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        clamp_logit_scale(model)
        state.step += 1
        return float(loss.detach())

    def _epoch(self) -> float:
        """Train one epoch over the usable images in a fresh order; returns its mean loss."""
        for m in head_modules(self.model):
            m.train()
        order = self.rng.permutation(self.usable)
        size = self.cfg.batch_size
        return float(
            np.mean([self._step(order[s * size : (s + 1) * size]) for s in range(self.steps_per_epoch)])
        )

    def _validate(self, epoch: int, train_loss: float, val: SplitFeatures) -> bool:
        """Score val, log the curve point, keep the best heads; True when early stopping says stop."""
        model, state = self.model, self.state
        metrics = self._val_metrics(val)
        point = {
            "epoch": epoch,
            "step": state.step,
            "seconds": round(self.clock() - self.t0, 1),
            "train_loss": train_loss,
            "temperature": float(1.0 / model.logit_scale.detach().exp()),
            "val_mean_recall": metrics["mean_recall"],
            "val_t2i_R@10": metrics["text_to_image"]["R@10"],
            "val_i2t_R@10": metrics["image_to_text"]["R@10"],
        }
        state.curve.append(point)
        self.reporter.log(
            f"epoch {epoch}: loss {train_loss:.3f}, val mean recall {metrics['mean_recall']:.2f} "
            f"(t2i R@10 {point['val_t2i_R@10']:.1f}, i2t R@10 {point['val_i2t_R@10']:.1f})"
        )
        if metrics["mean_recall"] > state.best:
            state.best, state.bad = metrics["mean_recall"], 0
            state.best_epoch, state.best_val = epoch, metrics
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        state.bad += 1
        return bool(self.cfg.patience and state.bad >= self.cfg.patience)

    def run(self, val: SplitFeatures) -> LitResult:
        previous = torch.get_num_threads()
        torch.set_num_threads(max(1, self.cfg.threads))
        try:
            return self._run(val)
        finally:
            torch.set_num_threads(previous)

    def _run(self, val: SplitFeatures) -> LitResult:
        cfg, state = self.cfg, self.state
        for epoch in range(1, cfg.epochs + 1):
            if self._validate(epoch, self._epoch(), val):
                state.stopped = "early-stopping"
                break
            if cfg.time_budget_s and self.clock() - self.t0 >= cfg.time_budget_s:
                state.stopped = "time-budget"
                break
        train_seconds = self.clock() - self.t0
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        for p in self.model.parameters():
            p.requires_grad_(False)
        best_epoch = int(state.best_epoch or 0)
        return LitResult(
            best_epoch, state.best_val or {}, state.curve, state.step, train_seconds, state.stopped
        )


def train_heads(
    model: Any,
    train: SplitFeatures,
    val: SplitFeatures,
    cfg: LitConfig,
    reporter: Reporter | None = None,
) -> LitResult:
    """Train the heads (and temperature) on cached features; the best epoch's weights are left in ``model``."""
    return _HeadTrainer(model, train, cfg, ensure(reporter)).run(val)


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
    features = (model, model_cfg, config_name, dataset)
    train = split_features(
        *features, "train", cfg.views, cfg.feature_precision, reporter, min_scale=cfg.min_scale
    )
    val = split_features(*features, val_split, 1, cfg.feature_precision, reporter)
    feature_seconds = time.perf_counter() - t0
    result = train_heads(model, train, val, cfg, reporter)
    model_id = None
    if out_dir is not None:
        meta = lit_checkpoint_meta(config_name, cfg, dataset.name, result)
        model_id = save_checkpoint_dir(out_dir, model, model_cfg, meta)
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


def lit_checkpoint_meta(
    config_name: str, cfg: LitConfig, dataset_name: str, result: LitResult
) -> dict[str, Any]:
    """The ``model.json`` entries of a head-training checkpoint (besides the model config and id)."""
    return {
        "recipe": "lit",
        "config": config_name,
        "train_args": cfg.to_dict(),
        "dataset": dataset_name,
        "val_curve": result.curve,
        "best_epoch": result.best_epoch,
    }
