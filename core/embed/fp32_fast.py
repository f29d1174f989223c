"""Model kinds whose fast mode stays in fp32: computed faster, not in fewer bits.

A pretrained-tower model (``core.models.towers``: a timm convolutional image trunk with BatchNorm, such as
EfficientNet-Lite, and the MiniLM text trunk, each with a small trained projection head) drifted in the
all-bf16 fast mode: lit-lite2 moved Recall@K on Flickr8k test by up to 0.5 point, ViT-B-32 by at most 0.1.
Measured part by part (``scripts/check_fast_parts.py``, artifacts/results/fast_parts.json; 2-vCPU AMX
Xeon, shared, load 2-3.6; model-only images/s at batch 32):

* the convolutional trunk in bf16 caused most of it (image cosine to fp32 down to 0.986; 0.5 point at
  86 images/s against 30 in fp32); folding its BatchNorms into the convolutions before the cast made it
  worse (0.7-0.8 point at 124-127 images/s: each folded weight carries the BatchNorm's scale in 8 bits);
* the projection head in bf16 behind an fp32 trunk still moved Recall@K by 0.2 point (image cosine
  0.99999: near-ties flip), for no speed (it is under 2% of the work);
* the MiniLM text trunk in bf16 alone moved Recall@K by 0.2 point, the goal's edge (3.4x the fp32
  captions/s: 2849 against 834).

In fp32 with its BatchNorms folded into the convolutions and channels-last weights and activations, the
image tower ran 74 images/s, 2.5x the plain fp32 tower and 86% of the all-bf16 one (depthwise
convolutions are bound by memory rather than multiply-adds and gain little from bf16; folding saves a
pass over the activations per layer), with no drift. So for this kind the fast copy is the whole model in
fp32, text included (Recall@K within 0.2 point is the goal, and bf16 text sat at its edge; captions are
few beside images when indexing), with the image trunk folded and channels-last. The compact models
(open_clip's ``ModifiedResNet`` image tower with BatchNorm, mostly with the MiniLM text trunk) are of this
kind too: trained on Flickr8k (``compact-flickr8k-128-zen5``, 2-vCPU AMD EPYC Zen 5), their bf16 copy moved
image-to-text R@5 by 0.8 point (images alone 0.6, even with the stem and the attention pool in fp32;
captions alone 0.5), the fp32 one by 0.0 on all six (``fast_recall.json``). CLIP's own towers (ViT, causal
text transformer) keep the fast format: their drift stayed within 0.1 point.

TF-ported trunks (``tf_efficientnet_lite*``) pad their strided convolutions "same" at run time
(``timm.layers.Conv2dSame``: ``F.pad`` then the convolution), which for an even input pads one more row and
column at the bottom and right. Padding a channels-last tensor so took 19 ms for one 16x96x112x112 input on a
2-vCPU AMD EPYC (AVX2), against 7 ms for the convolution. At the tower's fixed input size the fast copy
runs such a convolution instead as a plain one with a kernel one larger, its first row and column zero, and
the larger symmetric padding: the same products and sums (bit-identical there for every depthwise
convolution of EfficientNet-Lite2), and 1.4-2x faster with the padding. A ReLU or ReLU6 that follows a
plain convolution runs inside it (oneDNN's fused post-op: bit-identical there, and 10-30% faster per
convolution than a separate clamp over the activations).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator

import torch
from open_clip.modified_resnet import ModifiedResNet
from open_clip.timm_model import TimmModel
from timm.layers import Conv2dSame
from torch import nn

from core.embed.conv_fusion import ConvClamp, folded_into
from core.embed.resnet_fast import fuse_resnet_tower
from core.models.loading import LoadedModel

# Folded and unfolded fp32 trunks must agree to this cosine on a random image, else the trunk is not folded.
FOLD_CHECK_COSINE = 0.99999


def conv_image_tower(model: nn.Module) -> TimmModel | None:
    """The image tower of ``model`` when it is a timm convolutional trunk with BatchNorm, else None."""
    visual = getattr(model, "visual", None)
    if not isinstance(visual, TimmModel):
        return None
    return visual if any(isinstance(m, nn.BatchNorm2d) for m in visual.trunk.modules()) else None


def fast_copy_is_fp32(model: nn.Module) -> bool:
    """True for the model kinds whose fast copy stays fp32: a convolutional image tower with BatchNorm, a
    timm trunk or open_clip's ``ModifiedResNet`` (the compact models; see the module notes)."""
    return conv_image_tower(model) is not None or isinstance(getattr(model, "visual", None), ModifiedResNet)


def vectors_label(lm: LoadedModel) -> str:
    """What ``lm``'s vectors are computed in, for cache and library keys: its precision (``fp32fast`` on a
    CPU without native bf16), or ``fp32fast`` where its fast copy is the fp32 one above (so vectors of the
    earlier all-bf16 fast mode are not reused)."""
    if lm.precision != "fp32" and fast_copy_is_fp32(lm.model):
        return "fp32fast"
    return lm.precision


def format_note(lm: LoadedModel, asked: str | None) -> str | None:
    """A line for the user where ``asked`` (a precision as given) named a format that ``lm``'s vectors are
    not computed in (bf16 of a model kind whose fast copy stays fp32), else None."""
    label = vectors_label(lm)
    if (asked or "").strip().lower() != lm.precision or label == lm.precision:
        return None
    return (
        f"{lm.name} computes {lm.precision} in fp32 (vectors: {label}): in bf16 its kind of image tower "
        "moved Recall@K by 0.5-0.8 point"
    )


def fp32_fast_copy(model: nn.Module, channels_last: bool) -> nn.Module | None:
    """For a model of the kinds above, its fast inference copy: the whole model in fp32, in eval mode; a timm
    trunk's BatchNorms folded, its "same" padding static and its ReLU(6)s fused (all kept only when the
    changed trunk gives the same output), a ``ModifiedResNet`` folded and fused on the CPU
    (:func:`~core.embed.resnet_fast.fuse_resnet_tower`); with ``channels_last``, its image tower's weights
    in that layout. None for other models (they take the fast format)."""
    if not fast_copy_is_fp32(model):
        return None
    cast = copy.deepcopy(model).float().eval()
    visual = conv_image_tower(cast)
    if visual is None:  # a ModifiedResNet
        fuse_resnet_tower(cast)
    else:
        size = _input_size(visual)
        folded = copy.deepcopy(visual.trunk)
        changed = fold_batch_norms(folded) + static_same_padding(folded, size) + fuse_activations(folded)
        if changed and _same_output(visual.trunk, folded, size):
            visual.trunk = folded
    if channels_last:
        cast.visual = cast.visual.to(memory_format=torch.channels_last)
    return cast


def image_input_dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype an inference copy's image tower takes (that of its first parameter), else ``default``."""
    visual = getattr(model, "visual", None)
    first = next(visual.parameters(), None) if isinstance(visual, nn.Module) else None
    return default if first is None else first.dtype


def _same_output(a: nn.Module, b: nn.Module, size: int) -> bool:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    x = x.to(next(a.parameters()).device)
    with torch.inference_mode():
        ya, yb = a(x).flatten(1), b(x).flatten(1)
    return bool(torch.nn.functional.cosine_similarity(ya, yb).min() >= FOLD_CHECK_COSINE)


def _input_size(visual: TimmModel) -> int:
    size = getattr(visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def fold_batch_norms(model: nn.Module) -> int:
    """Fold, in place, every eval-mode affine ``BatchNorm2d`` (or timm ``BatchNormAct2d``) that directly
    follows a ``Conv2d`` among its parent's children into that convolution; returns how many were folded.
    Adjacency among children is how timm's convolutional blocks are declared, not a guarantee of data
    flow, so :func:`fp32_fast_copy` checks the folded trunk's output against the original's."""
    folded = 0
    for module, _, second, conv, bn in _adjacent_children(model):
        if (
            isinstance(conv, nn.Conv2d)
            and isinstance(bn, nn.BatchNorm2d)
            and not bn.training
            and bn.affine
            and bn.running_mean is not None
            and conv.out_channels == bn.num_features
        ):
            setattr(module, second, folded_into(conv, bn))
            folded += 1
    return folded


def _adjacent_children(model: nn.Module) -> Iterator[tuple[nn.Module, str, str, nn.Module, nn.Module]]:
    """Every pair of consecutive children among each module's children, as (parent, first's name, second's
    name, first, second), read as they are when reached (a caller may replace them in between)."""
    for module in list(model.modules()):
        names = list(module._modules)
        for first, second in zip(names, names[1:], strict=False):
            a, b = module._modules[first], module._modules[second]
            if a is not None and b is not None:
                yield module, first, second, a, b


class _StaticSameConv(nn.Module):
    """A ``Conv2dSame`` for one input size: at that size a plain convolution with the padding folded in
    (see the module docstring), at any other the original."""

    def __init__(self, same: Conv2dSame, size: tuple[int, int]) -> None:
        super().__init__()
        self.same = same
        self.size = size
        (grow_h, pad_h), (grow_w, pad_w) = (
            _same_pad(size[axis], same.kernel_size[axis], same.stride[axis]) for axis in (0, 1)
        )
        self.conv = nn.Conv2d(
            same.in_channels,
            same.out_channels,
            (same.kernel_size[0] + grow_h, same.kernel_size[1] + grow_w),
            (same.stride[0], same.stride[1]),
            (pad_h, pad_w),
            groups=same.groups,
            bias=same.bias is not None,
        )
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, :, grow_h:, grow_w:] = same.weight
            if same.bias is not None and self.conv.bias is not None:
                self.conv.bias.copy_(same.bias)
        self.conv.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if tuple(x.shape[-2:]) == self.size else self.same(x)


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same" padding of one axis as (rows to prepend to the kernel, symmetric padding): (0, p) when it
    pads p on both sides, (1, p + 1) when it pads p before and p + 1 after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total % 2, total - total // 2


def static_same_padding(trunk: nn.Module, size: int) -> int:
    """Replace, in place, every undilated ``Conv2dSame`` of ``trunk`` by a :class:`_StaticSameConv` for the
    input it gets from a ``size`` x ``size`` image; returns how many were replaced."""
    sizes: dict[str, tuple[int, int]] = {}

    def record(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            sizes.setdefault(name, (args[0].shape[-2], args[0].shape[-1]))

        return hook

    hooks = [
        module.register_forward_pre_hook(record(name))
        for name, module in trunk.named_modules()
        if isinstance(module, Conv2dSame) and module.dilation == (1, 1)
    ]
    try:
        with torch.inference_mode():
            trunk(torch.zeros(1, 3, size, size, device=next(trunk.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    for name, hw in sizes.items():
        same = trunk.get_submodule(name)
        assert isinstance(same, Conv2dSame)
        trunk.set_submodule(name, _StaticSameConv(same, hw))
    return len(sizes)


def _clamp_of(module: nn.Module) -> nn.Module | None:
    """``module`` itself, or its one non-Identity part if it is a Sequential, when that is a ReLU or ReLU6."""
    parts = list(module) if isinstance(module, nn.Sequential) else [module]
    acts = [m for m in parts if not isinstance(m, nn.Identity)]
    return acts[0] if len(acts) == 1 and type(acts[0]) in (nn.ReLU, nn.ReLU6) else None


def fuse_activations(trunk: nn.Module) -> int:
    """Fuse, in place, every ReLU or ReLU6 that directly follows a plain ``Conv2d`` (numeric padding)
    among its parent's children into that convolution, for a trunk on the CPU; returns how many were
    fused. Adjacency is not data flow: :func:`fp32_fast_copy` checks the result."""
    first_param = next(trunk.parameters(), None)
    if first_param is None or first_param.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return 0
    fused = 0
    for module, first, second, conv, follower in _adjacent_children(trunk):
        act = _clamp_of(follower)
        if type(conv) is nn.Conv2d and not isinstance(conv.padding, str) and act is not None:
            setattr(module, first, ConvClamp(conv, act))
            setattr(module, second, nn.Identity())
            fused += 1
    return fused
