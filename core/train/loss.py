"""Training losses: the CLIP loss (symmetric InfoNCE) and the VSE++ margin ranking loss (hardest negatives)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import CapsearchError

LOSSES = ("clip", "margin")
MAX_LOGIT_SCALE = math.log(100.0)  # open_clip clamps the learnable temperature so that exp(scale) <= 100


class ClipLoss(nn.Module):
    """Symmetric cross-entropy over the image-text similarity matrix of a batch (pairs on the diagonal)."""

    def forward(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        logits = logit_scale.exp() * image @ text.t()
        labels = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


class MarginRankingLoss(nn.Module):
    """VSE++ hinge loss: for each pair, the hardest negative caption and the hardest negative image
    must score ``margin`` below the positive (cosine similarities; the temperature is not used)."""

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        self.margin = margin

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        scores = image @ text.t()
        positive = scores.diag().view(-1, 1)
        eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
        cost_text = (
            (self.margin + scores - positive).clamp(min=0).masked_fill(eye, 0)
        )  # image -> wrong captions
        cost_image = (
            (self.margin + scores - positive.t()).clamp(min=0).masked_fill(eye, 0)
        )  # caption -> wrong images
        return cost_text.max(dim=1).values.mean() + cost_image.max(dim=0).values.mean()


def make_loss(name: str, margin: float = 0.2) -> nn.Module:
    """The loss called ``name`` (one of :data:`LOSSES`)."""
    if name == "clip":
        return ClipLoss()
    if name == "margin":
        return MarginRankingLoss(margin)
    raise CapsearchError(f"unknown loss {name!r}", hint=f"use one of: {', '.join(LOSSES)}")


def clamp_logit_scale(model: nn.Module) -> None:
    """Keep the learnable log-temperature in [0, ln 100], as open_clip does after every step."""
    scale = getattr(model, "logit_scale", None)
    if isinstance(scale, torch.Tensor):
        with torch.no_grad():
            scale.clamp_(0, MAX_LOGIT_SCALE)
