"""Convolution rewrites shared by the fast inference copies (``core.embed.fp32_fast`` for timm trunks,
``core.embed.resnet_fast`` for the compact models' ResNet): a BatchNorm folded into the convolution before
it, and a convolution with its ReLU or ReLU6 in one oneDNN call."""

from __future__ import annotations

import torch
from torch import nn


def folded_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Module:
    """Fold ``bn``'s eval-mode affine map into ``conv``'s weight and bias, in place, in float32; returns
    what must still run after the convolution (timm's ``BatchNormAct2d`` keeps its dropout and
    activation)."""
    mean, var = bn.running_mean, bn.running_var
    assert mean is not None and var is not None
    with torch.no_grad():
        scale = bn.weight.float() / torch.sqrt(var.float() + bn.eps)
        bias = torch.zeros_like(mean.float()) if conv.bias is None else conv.bias.float()
        shift = bn.bias.float() + (bias - mean.float()) * scale
        conv.weight.copy_(conv.weight.float() * scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
    after = [getattr(bn, name) for name in ("drop", "act") if isinstance(getattr(bn, name, None), nn.Module)]
    return nn.Sequential(*after) if after else nn.Identity()


class ConvClamp(nn.Module):
    """A ``Conv2d`` followed by ReLU or ReLU6 in one oneDNN call (inference on the CPU only)."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.attr, self.scalars = ("hardtanh", [0.0, 6.0]) if isinstance(act, nn.ReLU6) else ("relu", [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return torch.ops.mkldnn._convolution_pointwise(
            x, c.weight, c.bias, c.padding, c.stride, c.dilation, c.groups, self.attr, self.scalars, ""
        )
