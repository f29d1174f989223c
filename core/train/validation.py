"""Recall of a model on a preloaded split: what the trainer validates on and the fine-tuning recipe tests on.

The towers run under :func:`core.models.device.training_autocast` in the format asked for (exact fp32 when
none is), so validation during a run costs about what a training step's forward pass does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.data.records import PreparedDataset
from core.evaluation.recall import mean_recall, recall_metrics
from core.models.checkpoint import ClipModel
from core.models.device import Format, resolve_precision, training_autocast
from core.progress import Reporter
from core.train.data import CaptionTable, image_size_of, normalize, preload_images
from core.train.setup import StartModel
from core.train.text import TextFeatures


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


@torch.no_grad()
def encode_split(
    model: ClipModel, data: SplitData, device: torch.device, fmt: Format, batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised image and caption embeddings (float32 numpy) of a preloaded split."""
    was_training = model.training
    model.eval()
    img, cap = [], []
    with training_autocast(device, fmt):
        for s in range(0, len(data.images), batch):
            x = normalize(data.images[s : s + batch].to(device)).contiguous(memory_format=torch.channels_last)
            img.append(F.normalize(model.encode_image(x).float(), dim=-1).cpu())
        for s in range(0, len(data.text), batch):
            idx = torch.arange(s, min(s + batch, len(data.text)))
            cap.append(F.normalize(data.text(idx).float(), dim=-1).cpu())
    model.train(was_training)
    return torch.cat(img).numpy(), torch.cat(cap).numpy()


def evaluate(
    model: ClipModel, data: SplitData, device: torch.device, precision: str | None = None
) -> dict[str, Any]:
    """Recall@1/5/10 both ways (percent) and their mean on a prepared split (``precision``: see
    :func:`core.models.device.resolve_precision`, exact fp32 by default)."""
    img, cap = encode_split(model, data, device, resolve_precision(device, precision))
    metrics: dict[str, Any] = dict(recall_metrics(img, cap, data.table.caption_image))
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
