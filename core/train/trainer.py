"""The contrastive trainer: AdamW, warmup + cosine, mixed precision, gradient accumulation and clipping,
validation each epoch (mean of the six Recall@K on the val split), early stopping, best checkpoint kept,
a wall-clock budget, and resumption from a last-state file after an interruption.

Progress goes to a :class:`~core.progress.Reporter`: ``update("train", step, total, loss=, lr=,
samples_per_s=)`` every step and ``update("val", epoch, epochs, **metrics)`` after each validation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.atomic import atomic_path, write_json
from core.data.records import PreparedDataset
from core.errors import Cancelled, CapsearchError
from core.evaluation.recall import mean_recall, recall_metrics
from core.progress import Reporter, ensure
from core.safe_load import load_torch_file
from core.train.data import CaptionTable, augment, epoch_batches, image_size_of, normalize, preload_images
from core.train.freeze import apply_freeze, set_train_mode
from core.train.loss import clamp_logit_scale, make_loss
from core.train.schedule import lr_factor, progress_of
from core.train.setup import StartModel
from core.train.text import TextFeatures

LAST_STATE = "last_state.pt"
HISTORY = "train.json"


@dataclass
class TrainConfig:
    """Training arguments (all saved with the checkpoint)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.1
    warmup_steps: int = 50
    grad_clip: float = 1.0
    accum_steps: int = 1
    loss: str = "clip"
    margin: float = 0.2
    freeze: str = "full"
    captions_per_image: int = 1  # k > 1: each step uses k captions of every image (see core.train.loss)
    precision: str = "auto"  # auto (bf16 on CPU, bf16/fp16 on GPU) | bf16 | fp16 | fp32
    crop_scale: float = 0.8  # smallest crop area of the random resized crop; 1.0 turns cropping off
    flip: bool = False
    seed: int = 0
    patience: int = 0  # stop after this many validations without improvement (0: never)
    time_budget_s: float | None = None
    min_steps: int = 0  # with a time budget: train at least this many steps even when the budget runs out
    val_split: str = "val"
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What a run produced: the best checkpoint dir and model id, and the per-epoch curve."""

    out_dir: Path
    model_id: str | None
    best_epoch: int | None
    best_val: dict[str, Any] | None
    curve: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    steps: int = 0
    stopped: str = "epochs"  # epochs | early-stop | time-budget


def resolve_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: full fp32)."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise CapsearchError(f"unknown precision {precision!r}", hint="use auto, bf16, fp16 or fp32")
    return dtypes[precision]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters split as open_clip does: no weight decay on biases, norms, gains and the scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or any(k in name for k in ("bn", "ln", "bias", "logit_scale", "LayerNorm"))
        (no_decay if exclude else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def encode_split(
    model: nn.Module,
    images: torch.Tensor,
    text: TextFeatures,
    device: torch.device,
    dtype: torch.dtype | None,
    batch: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised image and caption embeddings (float32 numpy) of a preloaded split."""
    was_training = model.training
    model.eval()
    img, cap = [], []
    with autocast(device, dtype):
        for s in range(0, len(images), batch):
            x = normalize(images[s : s + batch].to(device)).contiguous(memory_format=torch.channels_last)
            img.append(F.normalize(model.encode_image(x).float(), dim=-1).cpu())
        for s in range(0, len(text), batch):
            idx = torch.arange(s, min(s + batch, len(text)))
            cap.append(F.normalize(text(idx).float(), dim=-1).cpu())
    model.train(was_training)
    return torch.cat(img).numpy(), torch.cat(cap).numpy()


@dataclass
class SplitData:
    """A split ready for training or evaluation: preloaded images, caption table and caption features."""

    images: torch.Tensor
    table: CaptionTable
    text: TextFeatures

    @classmethod
    def load(
        cls,
        start: StartModel,
        dataset: PreparedDataset,
        split: str,
        device: torch.device,
        reporter: Reporter | None = None,
    ) -> SplitData:
        images = preload_images(dataset, split, image_size_of(start.model), reporter)
        table = CaptionTable.of(dataset, split)
        return cls(
            images, table, TextFeatures(start.model, start.tokenizer, table.captions, device, reporter)
        )


def evaluate(
    model: nn.Module, data: SplitData, device: torch.device, precision: str = "auto"
) -> dict[str, Any]:
    """Recall@1/5/10 both ways (percent) and their mean on a prepared split."""
    img, cap = encode_split(model, data.images, data.text, device, autocast_dtype(precision, device))
    metrics = recall_metrics(img, cap, data.table.caption_image)
    metrics["mean_recall"] = mean_recall(metrics)
    return metrics


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """``{"t2i_R@1": .., "i2t_R@10": .., "mean_recall": ..}`` for progress displays and curves."""
    out = {"mean_recall": float(metrics["mean_recall"])}
    for direction, short in (("text_to_image", "t2i"), ("image_to_text", "i2t")):
        for k, v in metrics[direction].items():
            if k.startswith("R@") and v is not None:
                out[f"{short}_{k}"] = float(v)
    return out


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and all buffers (frozen parameters equal the starting weights)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    state = model.state_dict()
    buffers = {n for n, _ in model.named_buffers()}
    return {k: v.detach().cpu().clone() for k, v in state.items() if k in trainable or k in buffers}


def save_checkpoint(model: nn.Module, out_dir: Path, model_cfg: dict[str, Any], meta: dict[str, Any]) -> str:
    """Write the loadable checkpoint dir (model.safetensors + model.json); returns its model id."""
    from core.models.checkpoint import save_checkpoint_dir

    return save_checkpoint_dir(out_dir, model, model_cfg, meta)


class Trainer:
    """One training run into ``out_dir`` (see the module docstring)."""

    def __init__(
        self,
        start: StartModel,
        dataset: PreparedDataset,
        out_dir: Path,
        config: TrainConfig,
        reporter: Reporter | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.start = start
        self.dataset = dataset
        self.out_dir = Path(out_dir)
        self.cfg = config
        self.reporter = ensure(reporter)
        self.meta = dict(meta or {})
        self.device = resolve_device(config.device)
        self.dtype = autocast_dtype(config.precision, self.device)
        self.model = start.model.to(self.device)
        self.model.visual.to(memory_format=torch.channels_last)  # faster convolutions (oneDNN / cuDNN)
        self.trainable = apply_freeze(self.model, config.freeze)
        self.loss_fn = make_loss(config.loss, config.margin)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, config.weight_decay), lr=config.lr, fused=True
        )
        self.scaler = torch.amp.GradScaler(enabled=self.dtype == torch.float16 and self.device.type == "cuda")

    # -- state -----------------------------------------------------------------------------------
    def _save_last(self, state: dict[str, Any]) -> None:
        payload = {
            "model": _trainable_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "config": self.cfg.to_dict(),
            **state,
        }
        with atomic_path(self.out_dir / LAST_STATE) as tmp:
            torch.save(payload, tmp)

    def _load_last(self) -> dict[str, Any] | None:
        path = self.out_dir / LAST_STATE
        if not path.is_file():
            return None
        payload = load_torch_file(path, hint="pass --restart to start this run over (the file is replaced)")
        saved = {
            k: v
            for k, v in payload["config"].items()
            if k not in ("time_budget_s", "min_steps", "device", "epochs")
        }
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
        self.reporter.log(f"resuming from epoch {payload['epoch']} step {payload['step']}")
        return payload

    def _write_history(self, result: TrainResult, status: str) -> None:
        write_json(
            self.out_dir / HISTORY,
            {
                "status": status,
                "dataset": self.dataset.name,
                "start": self.start.start_id,
                "config": self.cfg.to_dict(),
                "trainable_params": self.trainable,
                "total_params": sum(p.numel() for p in self.model.parameters()),
                "model_id": result.model_id,
                "best_epoch": result.best_epoch,
                "best_val": result.best_val,
                "curve": result.curve,
                "train_seconds": round(result.train_seconds, 1),
                "steps": result.steps,
                "stopped": result.stopped,
                **self.meta,
            },
        )

    # -- run -------------------------------------------------------------------------------------
    def run(self, resume: bool = True) -> TrainResult:
        cfg, dev = self.cfg, self.device
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        train = SplitData.load(self.start, self.dataset, "train", dev, self.reporter)
        val = SplitData.load(self.start, self.dataset, cfg.val_split, dev, self.reporter)
        if cfg.captions_per_image < 1:
            raise CapsearchError(f"captions_per_image must be at least 1 (got {cfg.captions_per_image})")
        steps_per_epoch = len(epoch_batches(train.table, cfg.batch_size, cfg.seed, 0)) // cfg.accum_steps
        total_steps = max(1, steps_per_epoch * cfg.epochs)

        result = TrainResult(self.out_dir, None, None, None)
        epoch, batch_index, step, elapsed, best, bad = 0, 0, 0, 0.0, -math.inf, 0
        state = self._load_last() if resume else None
        if state:
            epoch, batch_index, step, elapsed = (
                state["epoch"],
                state["batch_index"],
                state["step"],
                state["elapsed"],
            )
            best, bad = state["best"], state["bad"]
            result.curve, result.model_id, result.best_epoch = (
                state["curve"],
                state["model_id"],
                state["best_epoch"],
            )
            result.best_val, result.stopped = state["best_val"], state.get("stopped", "epochs")
            gen.set_state(state["gen_rng"])
            if state.get("finished"):
                result.train_seconds, result.steps = elapsed, step
                return result

        def snapshot(**extra: Any) -> dict[str, Any]:
            return {
                "epoch": epoch,
                "batch_index": batch_index,
                "step": step,
                "elapsed": elapsed,
                "best": best,
                "bad": bad,
                "curve": result.curve,
                "model_id": result.model_id,
                "best_epoch": result.best_epoch,
                "best_val": result.best_val,
                "gen_rng": gen.get_state(),
                "stopped": result.stopped,
                **extra,
            }

        def validate(epoch_done: float, train_loss: float) -> bool:
            """Validate, keep the best checkpoint; True when training should stop early."""
            nonlocal best, bad
            metrics = evaluate(self.model, val, dev, cfg.precision)
            flat = flat_metrics(metrics)
            row = {
                "epoch": round(epoch_done, 3),
                "step": step,
                "elapsed_s": round(elapsed, 1),
                "train_loss": round(train_loss, 4),
                "lr": self.optimizer.param_groups[0]["lr"],
                "logit_scale": float(self.model.logit_scale.detach().exp()),
                **flat,
            }
            result.curve.append(row)
            self.reporter.update("val", math.ceil(epoch_done), cfg.epochs, **flat)
            if flat["mean_recall"] > best:
                best, bad = flat["mean_recall"], 0
                result.best_epoch, result.best_val = row["epoch"], metrics
                meta = {
                    "train_args": cfg.to_dict(),
                    "dataset": self.dataset.name,
                    "start": self.start.start_id,
                    "best_epoch": row["epoch"],
                    "val_metrics": metrics,
                    "val_curve": result.curve,
                    **self.meta,
                }
                result.model_id = save_checkpoint(self.model, self.out_dir, self.start.model_cfg, meta)
            else:
                bad += 1
            return cfg.patience > 0 and bad >= cfg.patience

        set_train_mode(self.model)
        t_last = time.monotonic()
        losses: list[float] = []
        stop = False
        try:
            while epoch < cfg.epochs and not stop:
                batches = epoch_batches(train.table, cfg.batch_size, cfg.seed, epoch, cfg.captions_per_image)
                n_usable = (len(batches) // cfg.accum_steps) * cfg.accum_steps
                while batch_index < n_usable:
                    self.reporter.check_cancelled()
                    t0 = time.monotonic()
                    factor = lr_factor(
                        step,
                        cfg.warmup_steps,
                        progress_of(step, total_steps, elapsed, cfg.time_budget_s, cfg.min_steps),
                        cfg.min_lr_ratio,
                    )
                    for group in self.optimizer.param_groups:
                        group["lr"] = cfg.lr * factor
                    loss_sum = 0.0
                    for _ in range(cfg.accum_steps):
                        img_idx, cap_idx = batches[batch_index]
                        x = augment(normalize(train.images[img_idx].to(dev)), cfg.crop_scale, cfg.flip, gen)
                        x = x.contiguous(memory_format=torch.channels_last)
                        with autocast(dev, self.dtype):
                            img = F.normalize(self.model.encode_image(x).float(), dim=-1)
                            txt = F.normalize(train.text(cap_idx.reshape(-1)).float(), dim=-1)
                            txt = txt.view(len(img), -1, txt.shape[-1])
                            scale = self.model.logit_scale.float()
                            loss = self.loss_fn(img, txt, scale) / cfg.accum_steps
                        self.scaler.scale(loss).backward()
                        loss_sum += float(loss.detach())
                        batch_index += 1
                    self.scaler.unscale_(self.optimizer)
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(
                            [p for g in self.optimizer.param_groups for p in g["params"]], cfg.grad_clip
                        )
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                    clamp_logit_scale(self.model)
                    step += 1
                    now = time.monotonic()
                    elapsed += now - t_last
                    t_last = now
                    losses.append(loss_sum)
                    self.reporter.update(
                        "train",
                        step,
                        total_steps,
                        loss=round(loss_sum, 4),
                        lr=self.optimizer.param_groups[0]["lr"],
                        samples_per_s=round(cfg.batch_size * cfg.accum_steps / max(now - t0, 1e-9), 1),
                        epoch=epoch + 1,
                    )
                    if cfg.time_budget_s and elapsed >= cfg.time_budget_s and step >= cfg.min_steps:
                        result.stopped, stop = "time-budget", True
                        break
                epoch_done = epoch + batch_index / max(n_usable, 1)
                epoch_loss = (
                    float(np.mean(losses[-max(1, n_usable // cfg.accum_steps) :])) if losses else float("nan")
                )
                if not stop:
                    epoch, batch_index = epoch + 1, 0
                if validate(epoch_done, epoch_loss) and not stop:
                    result.stopped, stop = "early-stop", True
                now = time.monotonic()
                elapsed += now - t_last
                t_last = now
                self._save_last(snapshot())
                set_train_mode(self.model)
        except Cancelled:
            elapsed += time.monotonic() - t_last
            if result.model_id is None:  # nothing validated yet: keep the current weights loadable
                meta = {
                    "train_args": cfg.to_dict(),
                    "dataset": self.dataset.name,
                    "start": self.start.start_id,
                    "note": "cancelled before the first validation",
                    **self.meta,
                }
                result.model_id = save_checkpoint(self.model, self.out_dir, self.start.model_cfg, meta)
            self._save_last(snapshot())
            result.train_seconds, result.steps = elapsed, step
            self._write_history(result, "cancelled")
            raise
        result.train_seconds, result.steps = elapsed, step
        self._save_last(snapshot(finished=True))
        self._write_history(result, "finished")
        return result


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
    return Trainer(start, dataset, out_dir, config, reporter, meta).run(resume=resume)


def load_best(model: nn.Module, out_dir: Path) -> None:
    """Load the best checkpoint's weights from ``out_dir`` into ``model`` (same architecture)."""
    from safetensors.torch import load_file

    state = load_file(str(Path(out_dir) / "model.safetensors"), device=str(next(model.parameters()).device))
    model.load_state_dict(state)
