"""The parts of a fast (bf16/fp16) inference copy that stay in fp32, decided by the kind of tower.

A pretrained-tower model (``core.models.towers``: a timm convolutional image trunk with BatchNorm, such as
EfficientNet-Lite, and a Hugging Face text trunk, each with a small trained projection head) drifted in
the all-bf16 fast mode: lit-lite2 lost up to 0.5 point of Recall@K on Flickr8k test, against at most 0.1
for ViT-B-32 (artifacts/results/fast_recall.json). Measured part by part on the 2-vCPU AMX Xeon
(artifacts/results/fast_parts.json, ``scripts/check_fast_parts.py``):

* the convolutional trunk in bf16 caused most of it (image cosine to fp32 down to 0.986; 0.5 point);
  folding its BatchNorms into the convolutions before the cast made it worse (0.8), since each folded
  weight then carries the BatchNorm's scale in 8 bits. In fp32 with the BatchNorms folded and
  channels-last activations it ran as fast as the bf16 trunk (16.4 against 16.9 images/s on a loaded
  machine; 8.0 for the plain fp32 tower): depthwise convolutions are bound by memory, not by
  multiply-adds, and gain little from bf16, while folding saves a pass over the activations per layer;
* the projection heads in bf16 still moved Recall@10 by 0.2-0.4 point with an image cosine of 0.99999
  (near-ties flip), and cost under 2% of the image tower's work, so they stay fp32;
* the text trunk (MiniLM) in bf16 alone moved Recall@K by at most 0.2 point, and keeps the fast mode's
  speed for captions and queries, so it stays in the fast format.

So for such models the whole image tower (trunk and head) and the text head run in fp32
(:class:`Fp32Part`), and the text trunk in the fast format. CLIP's own towers (ViT, causal text
transformer) are left entirely in the fast format: their drift stayed within 0.1 point.
"""

from __future__ import annotations

import copy

import torch
from open_clip.hf_model import HFTextEncoder
from open_clip.timm_model import TimmModel
from torch import nn

# Folded and unfolded fp32 trunks must agree to this cosine on a random image, else the trunk is not folded.
FOLD_CHECK_COSINE = 0.99999


class Fp32Part(nn.Module):
    """A module kept in float32 inside a low-precision copy: its input is cast to float32 (and, with
    ``channels_last``, an image batch to that layout); its output stays float32 (these are the last
    layers of a tower, so the embedding is not rounded to the low precision either)."""

    def __init__(self, module: nn.Module, channels_last: bool = False) -> None:
        super().__init__()
        self.module = module.float().eval()
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.dim() == 4:
            x = x.contiguous(memory_format=self.layout)
        return self.module(x)


def conv_image_tower(model: nn.Module) -> TimmModel | None:
    """The image tower of ``model`` when it is a timm convolutional trunk with BatchNorm, else None."""
    visual = getattr(model, "visual", None)
    if not isinstance(visual, TimmModel):
        return None
    trunk = visual.trunk.modules()
    return visual if any(isinstance(m, nn.BatchNorm2d) for m in trunk) else None


def keep_exact_parts(cast: nn.Module, source: nn.Module, channels_last: bool) -> nn.Module:
    """Put fp32 copies of ``source``'s exact parts (see the module notes) into ``cast``, its low-precision
    copy, in place; BatchNorms of a convolutional image trunk are folded. Returns ``cast``."""
    visual = conv_image_tower(source)
    if visual is not None:
        exact = copy.deepcopy(visual).eval()
        folded = copy.deepcopy(exact)
        if fold_batch_norms(folded.trunk) and _same_output(exact, folded):
            exact = folded
        cast.visual = Fp32Part(exact, channels_last)
    text = getattr(source, "text", None)
    if isinstance(text, HFTextEncoder) and isinstance(cast.text, HFTextEncoder):
        cast.text.proj = Fp32Part(copy.deepcopy(text.proj).eval())
    return cast


def image_input_dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype the image tower of an inference copy takes: float32 for an fp32 tower, else ``default``."""
    return torch.float32 if isinstance(getattr(model, "visual", None), Fp32Part) else default


def _same_output(a: TimmModel, b: TimmModel) -> bool:
    size = _input_size(a)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    device = next(a.parameters()).device
    with torch.inference_mode():
        ya, yb = a.trunk(x.to(device)).flatten(1), b.trunk(x.to(device)).flatten(1)
    return bool(torch.nn.functional.cosine_similarity(ya, yb).min() >= FOLD_CHECK_COSINE)


def _input_size(visual: TimmModel) -> int:
    size = getattr(visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _folded_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Module:
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


def fold_batch_norms(model: nn.Module) -> int:
    """Fold, in place, every eval-mode affine ``BatchNorm2d`` (or timm ``BatchNormAct2d``) that directly
    follows a ``Conv2d`` among its parent's children into that convolution; returns how many were folded.
    Adjacency among children is how timm's convolutional blocks are declared, not a guarantee of data
    flow, so :func:`keep_exact_parts` checks the folded trunk's output against the original's."""
    folded = 0
    for module in list(model.modules()):
        names = list(module._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, bn = module._modules[first], module._modules[second]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and not bn.training
                and bn.affine
                and bn.running_mean is not None
                and conv.out_channels == bn.num_features
            ):
                setattr(module, second, _folded_into(conv, bn))
                folded += 1
    return folded
