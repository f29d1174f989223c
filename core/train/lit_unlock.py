"""Partial unlocking of a capsearch-lit image trunk, made affordable on a CPU: the activations at the input of
the unlocked blocks are computed once per image and cached, and training runs only the unlocked blocks and
the heads on them.

With ``unlocked_blocks = n`` (:func:`core.models.towers.unlocked_block_prefixes`: the trunk's ``conv_head``
and ``bn2`` count as one block, then the last ``n - 1`` inverted-residual blocks), the trunk splits into a
frozen *stem* (everything before those blocks) and a trainable *tail*. The stem's output for each image's
clean view is cached in the embedding cache's layout (:func:`core.embed.cache.split_embeddings`: manifest,
chunks, resume, staleness), under the feature model id ``<image trunk id>/clean/stem-<n>``. The engine
L2-normalises every row, so the stem appends a constant column :data:`SCALE_COLUMN` to the flattened
activation: ``row = [a, K] / |[a, K]|``, and ``a = row[:-1] * K / row[-1]`` restores it exactly (up to
float rounding).

The tail keeps the pretrained BatchNorm statistics (eval mode: batches of cached activations are not what the
statistics were made on); its weights train at their own, lower learning rate, the heads at theirs.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.data.records import PreparedDataset
from core.evaluation.recall import mean_recall, recall_metrics
from core.progress import Reporter, ensure
from core.train.frozen_features import (
    ImageTrunkFeatures,
    SplitFeatures,
    _FeaturePass,
    _without_captions,
    image_feature_id,
    view_transform,
)
from core.train.lit import LitConfig, LitResult, _HeadTrainer, head_modules

SCALE_COLUMN = 1.0


def _blocks(trunk: Any) -> list[nn.Module]:
    return [block for stage in trunk.blocks for block in stage]


def stem_forward(trunk: Any, n: int, x: torch.Tensor) -> torch.Tensor:
    """The frozen part of the trunk: the input of the last ``n`` unlocked blocks."""
    x = trunk.bn1(trunk.conv_stem(x))
    blocks = _blocks(trunk)
    for block in blocks[: len(blocks) - (n - 1)]:
        x = block(x)
    return x


def tail_forward(trunk: Any, n: int, x: torch.Tensor) -> torch.Tensor:
    """The unlocked part of the trunk: the last ``n - 1`` blocks, ``conv_head``/``bn2`` and the pooling."""
    blocks = _blocks(trunk)
    for block in blocks[len(blocks) - (n - 1) :]:
        x = block(x)
    return trunk.global_pool(trunk.bn2(trunk.conv_head(x)))


def tail_modules(trunk: Any, n: int) -> list[nn.Module]:
    blocks = _blocks(trunk)
    return [*blocks[len(blocks) - (n - 1) :], trunk.conv_head, trunk.bn2]


class StemFeatures(ImageTrunkFeatures):
    """``encode_image``: the stem's output, flattened, with the scale column appended (see the module doc)."""

    def __init__(self, trunk: nn.Module, n: int, shape: tuple[int, int, int]) -> None:
        super().__init__(trunk)
        self.n = n
        self.dim = int(np.prod(shape)) + 1

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        act = stem_forward(self.trunk, self.n, x.contiguous(memory_format=torch.channels_last))
        flat = act.float().reshape(len(act), -1)
        return torch.cat([flat, torch.full((len(flat), 1), SCALE_COLUMN)], dim=1)


def decode_rows(rows: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Cached normalised rows back to ``[n, *shape]`` activations."""
    scale = SCALE_COLUMN / rows[:, -1:]
    return (rows[:, :-1] * scale).reshape(len(rows), *shape)


def stem_shape(trunk: Any, n: int, size: int) -> tuple[int, int, int]:
    with torch.inference_mode():
        out = stem_forward(trunk.eval(), n, torch.zeros(1, 3, size, size))
    return tuple(int(d) for d in out.shape[1:])  # type: ignore[return-value]


def stem_features(
    model: Any,
    model_cfg: dict[str, Any],
    dataset: PreparedDataset,
    split: str,
    n: int,
    reporter: Reporter | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """The cached (computed when missing) stem rows of ``split``'s clean view: ``[n_images, dim + 1]``."""
    from core.models.checkpoint import make_tokenizer
    from core.models.device import resolve_precision

    size = int(model_cfg["vision_cfg"].get("image_size", 224))
    trunk = model.visual.trunk
    stem = StemFeatures(trunk, n, stem_shape(trunk, n, size))
    tokenizer = make_tokenizer(model_cfg)
    common = {
        "tokenizer": tokenizer,
        "device": torch.device("cpu"),
        "context_length": int(getattr(tokenizer, "context_length", 77)),
        "precision": resolve_precision(torch.device("cpu"), "fp32"),
    }
    run = _FeaturePass("stem", model_cfg, dataset, split, common, ensure(reporter))
    model_id = f"{image_feature_id(model_cfg)}/clean/stem-{n}"
    emb = run.run(model_id, stem, view_transform(size, 0), _without_captions(dataset, split), batch_size)
    return emb.image_emb


def with_rows(feats: SplitFeatures, rows: np.ndarray) -> SplitFeatures:
    """``feats`` with its image rows replaced by cached stem rows (one view)."""
    if len(rows) != len(feats.records):
        raise ValueError(f"{len(rows)} stem rows for {len(feats.records)} images")
    return dataclasses.replace(feats, images=rows[None])


class _UnlockedTrainer(_HeadTrainer):
    """:class:`_HeadTrainer` whose image rows are stem activations run through the trainable tail; the tail
    trains at ``block_lr``. The time budget counts process CPU seconds (fair on a shared machine)."""

    clock = staticmethod(time.process_time)

    def __init__(
        self,
        model: Any,
        train: SplitFeatures,
        cfg: LitConfig,
        reporter: Reporter,
        unlock: tuple[int, float, tuple[int, int, int]],
    ) -> None:
        self.n, self.block_lr, self.shape = unlock
        super().__init__(model, train, cfg, reporter)

    def _optimizer(self) -> torch.optim.Optimizer:
        opt = super()._optimizer()
        tail = [p for m in tail_modules(self.model.visual.trunk, self.n) for p in m.parameters()]
        for p in tail:
            p.requires_grad_(True)
        for g in opt.param_groups:
            g["base_lr"] = self.cfg.lr
        opt.add_param_group(
            {"params": tail, "lr": self.block_lr, "base_lr": self.block_lr, "weight_decay": 0.0}
        )
        return opt

    def _embed_images(self, x: torch.Tensor) -> torch.Tensor:
        self.model.visual.trunk.eval()  # BatchNorm keeps its pretrained statistics
        act = decode_rows(x, self.shape).contiguous(memory_format=torch.channels_last)
        return self.model.visual.head(tail_forward(self.model.visual.trunk, self.n, act))

    def _val_metrics(self, val: SplitFeatures) -> dict[str, Any]:
        img, cap = encode_unlocked(self.model, val, self.n, self.shape)
        metrics: dict[str, Any] = recall_metrics(img, cap, val.caption_image)
        metrics["mean_recall"] = mean_recall(metrics)
        return metrics


def encode_unlocked(
    model: Any, feats: SplitFeatures, n: int, shape: tuple[int, int, int], batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image embeddings (stem rows through the tail and head) and caption embeddings, eval mode."""
    modules = [model.visual.trunk, *head_modules(model)]
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    rows = torch.from_numpy(feats.images[0])
    with torch.inference_mode():
        parts = [
            model.visual.head(tail_forward(model.visual.trunk, n, decode_rows(rows[i : i + batch], shape)))
            for i in range(0, len(rows), batch)
        ]
        img = F.normalize(torch.cat(parts), dim=-1)
        cap = F.normalize(model.text.proj(torch.from_numpy(feats.captions)), dim=-1)
    for m, w in zip(modules, was, strict=True):
        m.train(w)
    return img.numpy(), cap.numpy()


def train_unlocked(
    model: Any,
    train: SplitFeatures,
    val: SplitFeatures,
    cfg: LitConfig,
    n: int,
    block_lr: float,
    image_size: int,
    reporter: Reporter | None = None,
) -> LitResult:
    """Train the tail (at ``block_lr``) and the heads (at ``cfg.lr``) on stem rows; ``cfg.time_budget_s``
    counts process CPU seconds. The best val epoch's weights are left in ``model``."""
    shape = stem_shape(model.visual.trunk, n, image_size)
    return _UnlockedTrainer(model, train, cfg, ensure(reporter), (n, block_lr, shape)).run(val)
