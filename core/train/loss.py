"""Training losses: the CLIP loss (symmetric InfoNCE) and the VSE++ margin ranking loss (hardest negatives)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import CapsearchError
from core.train.choices import LOSSES

MAX_LOGIT_SCALE = math.log(100.0)  # open_clip clamps the learnable temperature so that exp(scale) <= 100


class ClipLoss(nn.Module):
    """Symmetric cross-entropy over the image-text similarity matrix of a batch (pairs on the diagonal).

    With ``text`` of shape [b, k, d] (k captions of every image) every caption is a text->image query
    over the b images, and every image an image->text query over all b*k captions with k positives
    (the mean log-probability of its own captions, as in SupCon); k = 1 is the plain CLIP loss.
    """

    def forward(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        b = image.shape[0]
        k = text.shape[1] if text.ndim == 3 else 1
        logits = logit_scale.exp() * image @ text.reshape(b * k, -1).t()  # [b, b*k]
        owner = torch.arange(b, device=logits.device).repeat_interleave(k)
        text_to_image = F.cross_entropy(logits.t(), owner)
        log_prob = logits.log_softmax(dim=1).view(b, b, k)
        image_to_text = -log_prob[torch.arange(b), torch.arange(b)].mean()
        return (text_to_image + image_to_text) / 2


class MarginRankingLoss(nn.Module):
    """VSE++ hinge loss: for each pair, the hardest negative caption and the hardest negative image
    must score ``margin`` below the positive (cosine similarities; the temperature is not used). With
    ``text`` of shape [b, k, d] the loss is averaged over the k caption slots."""

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        self.margin = margin

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        if text.ndim == 3:
            return sum(self(image, text[:, j]) for j in range(text.shape[1])) / text.shape[1]
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
