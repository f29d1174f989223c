"""The contrastive trainer: AdamW, warmup + cosine, mixed precision, gradient accumulation and clipping,
validation each epoch (mean of the six Recall@K on the val split), early stopping, best checkpoint kept,
a wall-clock budget, and resumption from a last-state file after an interruption.

Where a run stands is a :class:`TrainState`; :meth:`Trainer.run` loops over epochs, each made of
:meth:`Trainer._step` calls and ended by :meth:`Trainer._validate` and :meth:`Trainer._checkpoint` (the
last-state file: the state as plain values, the weights, optimizer, scaler and RNG states as tensors, all
readable with ``weights_only=True``).

The number format comes from :mod:`core.models.device` (``TrainConfig.precision``, default ``fast``:
autocast in the device's fast format; ``fp32`` for exact, repeatable runs).

Progress goes to a :class:`~core.progress.Reporter`: ``update("train", step, total, loss=, lr=,
samples_per_s=)`` every step and ``update("val", epoch, epochs, **metrics)`` after each validation.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.atomic import atomic_path, write_json
from core.data.records import PreparedDataset
from core.embed.heap import reuse_freed_memory
from core.errors import Cancelled, CapsearchError
from core.locks import exclusive
from core.models.checkpoint import ClipModel, save_checkpoint_dir
from core.models.device import (
    PRECISIONS,
    TRAINING_DEFAULT,
    Precision,
    resolve_device,
    resolve_precision,
    training_autocast,
)
from core.progress import Reporter, ensure
from core.safe_load import load_torch_file
from core.train.choices import LOSSES, Loss
from core.train.data import augment, epoch_batches, normalize
from core.train.freeze import apply_freeze, parse_policy, set_train_mode
from core.train.loss import clamp_logit_scale, make_loss
from core.train.schedule import lr_factor, progress_of
from core.train.setup import StartModel
from core.train.validation import SplitData, evaluate, flat_metrics

LAST_STATE = "last_state.pt"
HISTORY = "train.json"
# Arguments a resumed run may change: they do not alter what the finished steps computed.
_RESUMABLE_CHANGES = ("time_budget_s", "min_steps", "device", "epochs")


@dataclass
class LoopConfig:
    """The settings every contrastive training loop here shares (:class:`TrainConfig`, and
    :class:`core.train.lit.LitConfig` with its own defaults), saved with the checkpoint."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    captions_per_image: int = 1  # k > 1: each step uses k captions of every image (see core.train.loss)
    seed: int = 0
    patience: int = 0  # stop after this many validations without improvement (0: never)
    time_budget_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainConfig(LoopConfig):
    """Training arguments (all saved with the checkpoint), checked when made."""

    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    accum_steps: int = 1
    loss: Loss = "clip"
    margin: float = 0.2
    freeze: str = "full"  # a policy of core.train.freeze, or "auto" (see core.train.recipes.resolve_freeze)
    precision: Precision = TRAINING_DEFAULT  # see core.models.device
    crop_scale: float = 0.8  # smallest crop area of the random resized crop; 1.0 turns cropping off
    flip: bool = False
    min_steps: int = 0  # with a time budget: train at least this many steps even when the budget runs out
    val_split: str = "val"
    device: str | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("loss", LOSSES), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise CapsearchError(
                    f"unknown {name} {getattr(self, name)!r}", hint=f"use one of: {', '.join(allowed)}"
                )
        if self.freeze != "auto":
            parse_policy(self.freeze)
        if self.captions_per_image < 1:
            raise CapsearchError(f"captions_per_image must be at least 1 (got {self.captions_per_image})")


@dataclass
class TrainResult:
    """What a run produced: the best checkpoint dir and model id, and the per-epoch curve."""

    out_dir: Path
    model_id: str | None
    best_epoch: float | None
    best_val: dict[str, Any] | None
    curve: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    steps: int = 0
    stopped: str = "epochs"  # epochs | early-stop | time-budget


@dataclass
class TrainState:
    """Where a run stands: position in the epoch, steps, training time, the best validation so far."""

    epoch: int = 0
    batch_index: int = 0
    step: int = 0
    elapsed: float = 0.0
    best: float = -math.inf
    bad: int = 0  # validations since the best one
    curve: list[dict[str, Any]] = field(default_factory=list)
    model_id: str | None = None
    best_epoch: float | None = None
    best_val: dict[str, Any] | None = None
    stopped: str = "epochs"
    finished: bool = False

    def to_payload(self) -> dict[str, Any]:
        """Plain values for the last-state file."""
        return dataclasses.asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TrainState:
        return cls(**{f.name: payload[f.name] for f in dataclasses.fields(cls) if f.name in payload})

    def result(self, out_dir: Path) -> TrainResult:
        return TrainResult(
            out_dir,
            self.model_id,
            self.best_epoch,
            self.best_val,
            self.curve,
            self.elapsed,
            self.step,
            self.stopped,
        )


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters split as open_clip does: no weight decay on biases, norms, gains and the scale."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or any(k in name for k in ("bn", "ln", "bias", "logit_scale", "LayerNorm"))
        (no_decay if exclude else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and all buffers (frozen parameters equal the starting weights)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    state = model.state_dict()
    buffers = {n for n, _ in model.named_buffers()}
    return {k: v.detach().cpu().clone() for k, v in state.items() if k in trainable or k in buffers}


class Trainer:
    """One training run into ``out_dir`` (see the module docstring); made by :func:`train`, which fills in
    the defaults of its arguments."""

    def __init__(
        self,
        start: StartModel,
        dataset: PreparedDataset,
        out_dir: Path,
        config: TrainConfig,
        reporter: Reporter,
        meta: dict[str, Any],
    ) -> None:
        self.start = start
        self.dataset = dataset
        self.out_dir = Path(out_dir)
        self.cfg = config
        self.reporter = reporter
        self.meta = meta
        self.device = resolve_device(config.device)
        self.format = resolve_precision(self.device, config.precision, TRAINING_DEFAULT)
        self.model: ClipModel = start.model.to(self.device)
        self.model.visual.to(memory_format=torch.channels_last)  # faster convolutions (oneDNN / cuDNN)
        self.trainable = apply_freeze(self.model, config.freeze)
        self.loss_fn = make_loss(config.loss, config.margin)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, config.weight_decay), lr=config.lr, fused=True
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.format == "fp16")
        self.generator = torch.Generator().manual_seed(config.seed)
        self._t_last = time.monotonic()

    # -- state -----------------------------------------------------------------------------------
    def _checkpoint(self, state: TrainState) -> None:
        """Write the last-state file a resumed run starts from."""
        payload = {
            "model": _trainable_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "gen_rng": self.generator.get_state(),
            "config": self.cfg.to_dict(),
            **state.to_payload(),
        }
        with atomic_path(self.out_dir / LAST_STATE) as tmp:
            torch.save(payload, tmp)

    def _resume(self) -> TrainState | None:
        """Restore weights, optimizer and RNGs from the last-state file; its state, or None without one."""
        path = self.out_dir / LAST_STATE
        if not path.is_file():
            return None
        payload = load_torch_file(path, hint="pass --restart to start this run over (the file is replaced)")
        saved = {k: v for k, v in payload["config"].items() if k not in _RESUMABLE_CHANGES}
        now = {k: v for k, v in self.cfg.to_dict().items() if k in saved}
        if saved != now:
            raise CapsearchError(
                f"{path} was written by a run with other training arguments",
                hint="resume with the same arguments, or pass --restart to start over",
            )
        self.model.load_state_dict(payload["model"], strict=False)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scaler.load_state_dict(payload["scaler"])
        torch.set_rng_state(payload["torch_rng"])
        self.generator.set_state(payload["gen_rng"])
        self.reporter.log(f"resuming from epoch {payload['epoch']} step {payload['step']}")
        return TrainState.from_payload(payload)

    def _write_history(self, state: TrainState, status: str) -> None:
        write_json(
            self.out_dir / HISTORY,
            {
                "status": status,
                "dataset": self.dataset.name,
                "start": self.start.start_id,
                "config": self.cfg.to_dict(),
                "trainable_params": self.trainable,
                "total_params": sum(p.numel() for p in self.model.parameters()),
                "model_id": state.model_id,
                "best_epoch": state.best_epoch,
                "best_val": state.best_val,
                "curve": state.curve,
                "train_seconds": round(state.elapsed, 1),
                "steps": state.step,
                "stopped": state.stopped,
                **self.meta,
            },
        )

    def _save_model(self, **extra: Any) -> str:
        """Write the loadable checkpoint dir (model.safetensors + model.json); returns its model id."""
        meta = {
            "train_args": self.cfg.to_dict(),
            "dataset": self.dataset.name,
            "start": self.start.start_id,
            **extra,
            **self.meta,
        }
        return save_checkpoint_dir(self.out_dir, self.model, self.start.model_cfg, meta)

    def _tick(self, state: TrainState) -> float:
        """Add the time since the last tick to ``state.elapsed``; returns now."""
        now = time.monotonic()
        state.elapsed += now - self._t_last
        self._t_last = now
        return now

    # -- steps -----------------------------------------------------------------------------------
    def _set_lr(self, state: TrainState, total_steps: int) -> None:
        cfg = self.cfg
        progress = progress_of(state.step, total_steps, state.elapsed, cfg.time_budget_s, cfg.min_steps)
        factor = lr_factor(state.step, cfg.warmup_steps, progress, cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * factor

    def _backward(self, data: SplitData, img_idx: torch.Tensor, cap_idx: torch.Tensor) -> float:
        """Forward and backward one batch (its loss divided by ``accum_steps``); returns that loss."""
        cfg = self.cfg
        x = augment(normalize(data.images[img_idx].to(self.device)), cfg.crop_scale, cfg.flip, self.generator)
        x = x.contiguous(memory_format=torch.channels_last)
        with training_autocast(self.device, self.format):
            img = F.normalize(self.model.encode_image(x).float(), dim=-1)
            txt = F.normalize(data.text(cap_idx.reshape(-1)).float(), dim=-1)
            txt = txt.view(len(img), -1, txt.shape[-1])
            scale = self.model.logit_scale.float()
            loss = self.loss_fn(img, txt, scale) / cfg.accum_steps
        self.scaler.scale(loss).backward()
        return float(loss.detach())

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.cfg.grad_clip
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        clamp_logit_scale(self.model)

    def _step(
        self,
        state: TrainState,
        data: SplitData,
        batches: list[tuple[torch.Tensor, torch.Tensor]],
        total_steps: int,
    ) -> float:
        """One optimizer step over ``accum_steps`` batches from ``state.batch_index``; returns its loss."""
        cfg = self.cfg
        self.reporter.check_cancelled()
        t0 = time.monotonic()
        self._set_lr(state, total_steps)
        loss = 0.0
        for _ in range(cfg.accum_steps):
            loss += self._backward(data, *batches[state.batch_index])
            state.batch_index += 1
        self._optimizer_step()
        state.step += 1
        now = self._tick(state)
        self.reporter.update(
            "train",
            state.step,
            total_steps,
            loss=round(loss, 4),
            lr=self.optimizer.param_groups[0]["lr"],
            samples_per_s=round(cfg.batch_size * cfg.accum_steps / max(now - t0, 1e-9), 1),
            epoch=state.epoch + 1,
        )
        return loss

    def _validate(self, state: TrainState, val: SplitData, epoch_done: float, train_loss: float) -> bool:
        """Validate, keep the best checkpoint; True when training should stop early."""
        cfg = self.cfg
        metrics = evaluate(self.model, val, self.device, self.format)
        flat = flat_metrics(metrics)
        row = {
            "epoch": round(epoch_done, 3),
            "step": state.step,
            "elapsed_s": round(state.elapsed, 1),
            "train_loss": round(train_loss, 4),
            "lr": self.optimizer.param_groups[0]["lr"],
            "logit_scale": float(self.model.logit_scale.detach().exp()),
            **flat,
        }
        state.curve.append(row)
        self.reporter.update("val", math.ceil(epoch_done), cfg.epochs, **flat)
        if flat["mean_recall"] > state.best:
            state.best, state.bad = flat["mean_recall"], 0
            state.best_epoch, state.best_val = row["epoch"], metrics
            state.model_id = self._save_model(
                best_epoch=row["epoch"], val_metrics=metrics, val_curve=state.curve
            )
        else:
            state.bad += 1
        return cfg.patience > 0 and state.bad >= cfg.patience

    def _epoch(
        self, state: TrainState, train: SplitData, val: SplitData, total_steps: int, losses: list[float]
    ) -> bool:
        """Train the rest of ``state.epoch``, validate and checkpoint; True when training should stop."""
        cfg = self.cfg
        batches = epoch_batches(train.table, cfg.batch_size, cfg.seed, state.epoch, cfg.captions_per_image)
        n_usable = (len(batches) // cfg.accum_steps) * cfg.accum_steps
        stop = False
        while state.batch_index < n_usable:
            losses.append(self._step(state, train, batches, total_steps))
            if cfg.time_budget_s and state.elapsed >= cfg.time_budget_s and state.step >= cfg.min_steps:
                state.stopped, stop = "time-budget", True
                break
        epoch_done = state.epoch + state.batch_index / max(n_usable, 1)
        recent = losses[-max(1, n_usable // cfg.accum_steps) :]
        epoch_loss = float(np.mean(recent)) if recent else float("nan")
        if not stop:
            state.epoch, state.batch_index = state.epoch + 1, 0
        if self._validate(state, val, epoch_done, epoch_loss) and not stop:
            state.stopped, stop = "early-stop", True
        self._tick(state)
        self._checkpoint(state)
        set_train_mode(self.model)
        return stop

    # -- run -------------------------------------------------------------------------------------
    def run(self, resume: bool = True) -> TrainResult:
        """Train (resuming from the last state unless ``resume`` is False), holding ``out_dir``'s lock. Freed
        activations stay in the heap for the next step (:mod:`core.embed.heap`)."""
        with exclusive(self.out_dir, self.reporter.log), reuse_freed_memory():
            return self._run(resume)

    def _run(self, resume: bool) -> TrainResult:
        cfg = self.cfg
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        train = SplitData.load(self.start, self.dataset, "train", self.device, self.reporter)
        val = SplitData.load(self.start, self.dataset, cfg.val_split, self.device, self.reporter)
        steps_per_epoch = len(epoch_batches(train.table, cfg.batch_size, cfg.seed, 0)) // cfg.accum_steps
        total_steps = max(1, steps_per_epoch * cfg.epochs)
        state = (self._resume() if resume else None) or TrainState()
        if state.finished:
            return state.result(self.out_dir)

        set_train_mode(self.model)
        self._t_last = time.monotonic()
        losses: list[float] = []
        stop = False
        try:
            while state.epoch < cfg.epochs and not stop:
                stop = self._epoch(state, train, val, total_steps, losses)
        except Cancelled:
            self._tick(state)
            if state.model_id is None:  # nothing validated yet: keep the current weights loadable
                state.model_id = self._save_model(note="cancelled before the first validation")
            self._checkpoint(state)
            self._write_history(state, "cancelled")
            raise
        state.finished = True
        self._checkpoint(state)
        self._write_history(state, "finished")
        return state.result(self.out_dir)


def train(
    start: StartModel,
    dataset: PreparedDataset,
    out_dir: Path,
    config: TrainConfig,
    reporter: Reporter | None = None,
    meta: dict[str, Any] | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train ``start`` on ``dataset`` into ``out_dir`` (resuming from its last state when there is one)."""
    trainer = Trainer(start, dataset, out_dir, config, ensure(reporter), dict(meta or {}))
    return trainer.run(resume=resume)


def load_best(model: nn.Module, out_dir: Path) -> None:
    """Load the best checkpoint's weights from ``out_dir`` into ``model`` (same architecture)."""
    from safetensors.torch import load_file

    state = load_file(str(Path(out_dir) / "model.safetensors"), device=str(next(model.parameters()).device))
    model.load_state_dict(state)
