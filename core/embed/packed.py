"""bf16 (and fp32fast) inference on the CPU with the linear layers' weights prepacked once for oneDNN.

A plain bf16 ``F.linear`` on the CPU reorders its weight into oneDNN's blocked layout on every call.
Here the weights are packed once, as torch's own inductor does when it freezes a model, and open_clip's
transformer blocks are replaced whole (:class:`PackedBlock`) so that the MLP's GELU and both residual
additions run inside the linear layers' oneDNN calls: ViT-B-32 text-query encoding went from about 19 to
13 ms p50 on this project's AMX Xeon (artifacts/results/bench_query_latency_bf16.json). Every linear layer
of a Hugging Face text trunk is packed on its own.

In fp32 the faster kernel depends on the machine and its load: on a 2-vCPU AMD EPYC (AVX2) oneDNN's packed
linear ran ViT-B-32 at a steady 128-130 GFLOP/s while torch's own matmul (MKL) swung between 74 and 123
with other work on the machine, yet reached 163 on the idle machine (bench_throughput.json). So an fp32
copy keeps the same blocks on either kernel, as :func:`core.embed.tuning.fp32_linear_kernel` measured.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, Transformer, VisionTransformer
from torch import nn

from core.embed import amx_attention
from core.models.text_tower import hf_text_tower


def packing_available(dtype: torch.dtype = torch.float32) -> bool:
    """True when this torch build has oneDNN and the packed-linear operators, and this CPU can pack
    ``dtype`` (oneDNN's bf16 packing needs AVX-512 or AVX-NE-CONVERT: not on an AVX2-only CPU)."""
    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
        and (dtype != torch.bfloat16 or bool(ops._is_mkldnn_bf16_supported()))
    )


class PackedLinear(nn.Module):
    """``F.linear(x, weight, bias)`` for inference, optionally followed by a GELU (``gelu``: ``"none"`` for
    erf, ``"tanh"``) or a residual add. With ``onednn`` (the default) ``weight`` is held in oneDNN's packed
    layout and the GELU or add runs inside its call; without, in fp32 only, torch's own matmul (MKL) runs it
    and the GELU or add follows (:func:`core.embed.tuning.fp32_linear_kernel` picks one per machine)."""

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, gelu: str | None = None, onednn: bool = True
    ) -> None:
        super().__init__()
        # ``weight`` keeps its name so that code reading ``layer.weight.dtype`` (open_clip does) still works.
        weight = weight.detach()
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, None) if onednn else weight
        self.bias = None if bias is None else bias.detach()
        self.onednn = onednn
        self.post_op, self.algorithm = ("none", "") if gelu is None else ("gelu", gelu)

    @classmethod
    def of(cls, linear: nn.Linear, gelu: str | None = None, onednn: bool = True) -> PackedLinear:
        return cls(linear.weight, linear.bias, gelu, onednn)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if residual is not None and self.post_op != "none":
            raise ValueError("a packed linear layer fuses either its activation or a residual add, not both")
        if not self.onednn:
            y = F.linear(x, self.weight, self.bias)
            if residual is not None:
                return y.add_(residual)
            return F.gelu(y, approximate=self.algorithm) if self.post_op == "gelu" else y
        if residual is None:
            return torch.ops.mkldnn._linear_pointwise(
                x, self.weight, self.bias, self.post_op, [], self.algorithm
            )
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight, self.bias, "add")


class PackedBlock(nn.Module):
    """An open_clip ``ResidualAttentionBlock`` used for self-attention, on packed weights: the qkv
    projection, SDPA (unmasked bf16 on one thread: :mod:`core.embed.amx_attention` where it runs), the
    output projection fused with its residual add, the MLP's first layer fused with its GELU (other
    activations run apart) and its second fused with the residual add. ``mlp_parts`` > 1
    runs the MLP over that many slices of its hidden units, each slice's output added onto the sum so far
    in the second layer's call: the same sum, rounded once per slice in bf16. The hidden activations of a
    slice are that much smaller, and on the AMX Xeon ViT-B-32's two halves (800 rows of 1,536 units, 2.4 MB
    in bf16, against 4.9 MB whole) ran its MLP 11-18% faster (:func:`mlp_parts_rates`,
    :func:`core.embed.tuning.mlp_parts` chooses per machine)."""

    def __init__(self, block: ResidualAttentionBlock, onednn: bool = True, mlp_parts: int = 1) -> None:
        super().__init__()
        mha, mlp = block.attn, block.mlp
        self.heads = mha.num_heads
        self.ln_1, self.ln_2 = block.ln_1, block.ln_2
        self.qkv = PackedLinear(mha.in_proj_weight, mha.in_proj_bias, onednn=onednn)
        # Unmasked bf16 self-attention on one thread: the AMX kernel where it runs, else torch's.
        bf16_heads = mha.in_proj_weight.dtype == torch.bfloat16 and mha.head_dim in amx_attention.HEAD_DIMS
        self.amx_attention = amx_attention.kernel() if bf16_heads else None
        self.out = PackedLinear.of(mha.out_proj, onednn=onednn)
        act = mlp.gelu
        fused = isinstance(act, nn.GELU)
        gelu = act.approximate if fused else None
        self.act = nn.Identity() if fused else act
        # The MLP over slices of its hidden units: each slice's first layer, then its share of the second
        # layer added onto the sum so far (the bias and the residual come with the first share).
        w_in, b_in, w_out = mlp.c_fc.weight, mlp.c_fc.bias, mlp.c_proj.weight
        hidden = torch.arange(w_in.shape[0]).tensor_split(mlp_parts)
        self.fc = nn.ModuleList(
            PackedLinear(w_in[h], None if b_in is None else b_in[h], gelu, onednn) for h in hidden
        )
        self.proj = nn.ModuleList(
            PackedLinear(w_out[:, h].contiguous(), mlp.c_proj.bias if i == 0 else None, onednn=onednn)
            for i, h in enumerate(hidden)
        )

    @staticmethod
    def supports(block: ResidualAttentionBlock) -> bool:
        mha, mlp = block.attn, block.mlp
        return (
            isinstance(mha, nn.MultiheadAttention)
            and mha.batch_first
            and mha._qkv_same_embed_dim
            and mha.in_proj_weight is not None
            and mha.bias_k is None
            and not mha.add_zero_attn
            and not hasattr(block, "ln_1_kv")
            and isinstance(block.ls_1, nn.Identity)
            and isinstance(block.ls_2, nn.Identity)
            and list(mlp._modules) == ["c_fc", "gelu", "c_proj"]
            and type(mlp.c_fc) is nn.Linear
            and type(mlp.c_proj) is nn.Linear
        )

    def get_weight_dtype(self) -> torch.dtype:
        """What open_clip's ``Transformer.get_cast_dtype`` asks its first block."""
        first = self.fc[0]
        assert isinstance(first, PackedLinear)
        return first.weight.dtype

    def forward(
        self,
        q_x: torch.Tensor,
        k_x: torch.Tensor | None = None,
        v_x: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if k_x is not None or v_x is not None:
            raise ValueError("PackedBlock computes self-attention only")
        return self.attend(q_x, attn_mask)[0]

    def attend(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The block on ``x`` ``[b, n, d]``, its queries attending under ``attn_mask`` (``[n, p + n]``) to
        ``past``, the keys and values of a ``p``-token prefix that every sequence shares (``[1, heads, p,
        d / heads]``, from an earlier call), and to their own. ``rows``: the output at position ``rows[i]``
        of sequence i only, ``[b, d]``; the output projection and the MLP then run there alone. Returns the
        output and ``x``'s own keys and values."""
        b, n, d = x.shape
        qkv = self.qkv(self.ln_1(x))
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        own = (k, v)
        amx = self.amx_on_this_thread() if attn_mask is None and past is None and rows is None else None
        if amx is not None:
            y = self.out(amx(qkv, self.heads), residual=x)
            return self.mlp(self.ln_2(y), y), own
        if past is not None:
            k = torch.cat([past[0].expand(b, -1, -1, -1), k], dim=2)
            v = torch.cat([past[1].expand(b, -1, -1, -1), v], dim=2)
        mask = None if attn_mask is None else attn_mask.to(x.dtype)  # as ResidualAttentionBlock does
        residual = x
        if rows is not None:
            at = torch.arange(b, device=x.device)
            q, residual = q[at, :, rows].unsqueeze(2), x[at, rows]
            mask = None if mask is None else mask[rows][:, None, None, :]
        mixed = (
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(residual.shape)
        )
        y = self.out(mixed, residual=residual)
        return self.mlp(self.ln_2(y), y), own

    def amx_on_this_thread(self) -> amx_attention.AttentionKernel | None:
        """The AMX attention where this block has it and the calling thread runs one intra-op thread (torch's
        kernel splits the heads across more; this one cannot), else None."""
        return self.amx_attention if torch.get_num_threads() == 1 else None

    def mlp(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``residual`` plus the MLP of ``x``, one slice of its hidden units at a time."""
        out = residual
        for fc, proj in zip(self.fc, self.proj, strict=True):
            out = proj(self.act(fc(x)), residual=out)
        return out


Normalization = tuple[tuple[float, ...], tuple[float, ...]]
# The narrowest MLP (hidden units) pack_for_cpu slices: mlp_parts_rates measures ViT-B-32's 3,072; a narrow
# MLP's hidden activations fit the cache whole, and each slice is one more call.
MLP_SLICE_MIN_HIDDEN = 2048
PIXEL_CENTRE = 128


def _pixel_folded(
    weight: torch.Tensor, bias: torch.Tensor | None, pixels: Normalization, onednn: bool
) -> PackedLinear:
    """``weight @ ((x / 255 - mean) / std) + bias`` as ``weight' @ (x - 128) + bias'`` (channels-last patch
    inputs: ``weight``'s columns cycle through the channels), computed in fp32."""
    mean, std = (torch.tensor(v, dtype=torch.float32) for v in pixels)
    per_pixel = len(weight.T) // len(std)
    scale = (1 / (255 * std)).repeat(per_pixel)
    shift = ((mean - PIXEL_CENTRE / 255) / std).repeat(per_pixel)
    w = weight.float()
    b = (torch.zeros(len(w)) if bias is None else bias.float()) - w @ shift
    return PackedLinear((w * scale).to(weight.dtype), b.to(weight.dtype), onednn=onednn)


class PatchLinear(nn.Module):
    """A ViT's patch embedding, a convolution whose stride is its kernel, as one packed linear layer over the
    image's patches (oneDNN's convolution ran ViT-B-32's at about half the bf16 rate of its linear layers).
    Takes images in either layout (channels-last ones are gathered into patches with one copy) and returns
    ``[b, width, grid_h, grid_w]`` as the convolution does, laid out so that open_clip's flattening to tokens
    copies nothing.

    With ``pixels``, the preprocessing's ``(mean, std)``, it also takes uint8 images of 0-255 pixels, the
    scaling and normalisation ``(x / 255 - mean) / std`` folded into a second weight and bias: the engine
    then hands it the decoded batch as it is, which saves three float passes over the batch (7 ms of 165 for
    32 ViT-B-32 images in bf16 on an AMX Xeon). The pixels enter centred, ``x - 128`` (exact in bf16): folded
    around 0 instead, the bf16 weights' rounding added up over all-positive inputs and the embeddings'
    least cosine to fp32 fell from 0.99995 to 0.99982 (ViT-B-32, 200 Flickr8k images); centred it is
    0.99995 again."""

    def __init__(self, conv: nn.Conv2d, onednn: bool = True, pixels: Normalization | None = None) -> None:
        super().__init__()
        self.kernel = conv.kernel_size
        # The weight's inputs in a channels-last patch's order: kernel row, kernel column, channel.
        weight = conv.weight.detach().permute(0, 2, 3, 1).reshape(conv.out_channels, -1)
        self.linear = PackedLinear(weight, conv.bias, onednn=onednn)
        self.pixel_linear = None if pixels is None else _pixel_folded(weight, conv.bias, pixels, onednn)

    @staticmethod
    def supports(conv: nn.Module) -> bool:
        return (
            type(conv) is nn.Conv2d
            and conv.stride == conv.kernel_size
            and conv.padding in ((0, 0), "valid")
            and conv.dilation == (1, 1)
            and conv.groups == 1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        kh, kw = self.kernel
        gh, gw = h // kh, w // kw  # the convolution leaves out a remainder narrower than its kernel
        patches = x[:, :, : gh * kh, : gw * kw].permute(0, 2, 3, 1).reshape(b, gh, kh, gw, kw, c)
        rows = patches.transpose(2, 3).reshape(b * gh * gw, kh * kw * c)
        linear = self.linear
        if x.dtype == torch.uint8:
            if self.pixel_linear is None:
                raise ValueError("this patch embedding takes normalised float images, not uint8 pixels")
            linear, rows = self.pixel_linear, rows.to(self.pixel_linear.weight.dtype).sub_(PIXEL_CENTRE)
        return linear(rows).view(b, gh, gw, -1).permute(0, 3, 1, 2)


def takes_pixels(model: nn.Module) -> bool:
    """True when ``model``'s image tower takes uint8 0-255 pixels (a :class:`PatchLinear` given ``pixels``)."""
    conv = getattr(getattr(model, "visual", None), "conv1", None)
    return isinstance(conv, PatchLinear) and conv.pixel_linear is not None


class FirstTokenTransformer(nn.Module):
    """An open_clip ``Transformer`` of packed blocks under a ViT that pools its first (class) token: every
    block but the last runs as before, the last computes the class token's row alone
    (:meth:`PackedBlock.attend`: its keys and values still come from every token). Returns ``[b, 1, d]``, what
    the tower's pooling and ``ln_post`` read. On ViT-B-32 the last block's output projection and MLP then
    run on 1 row in 50, which saves 6% of the tower's arithmetic (8.21 of 8.73 GFLOP per image left)."""

    def __init__(self, transformer: Transformer) -> None:
        super().__init__()
        self.resblocks = transformer.resblocks
        self.batch_first = True

    @staticmethod
    def supports(visual: VisionTransformer) -> bool:
        transformer = visual.transformer
        return (
            visual.pool_type == "tok"
            and visual.attn_pool is None
            and not visual.output_tokens
            and isinstance(transformer, Transformer)
            and transformer.batch_first
            and all(isinstance(b, PackedBlock) for b in transformer.resblocks)
        )

    def get_cast_dtype(self) -> torch.dtype:
        return self.resblocks[0].get_weight_dtype()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        *first, last = self.resblocks
        for block in first:
            x = block(x, attn_mask=attn_mask)
        rows = torch.zeros(len(x), dtype=torch.long, device=x.device)
        return last.attend(x, attn_mask, rows=rows)[0].unsqueeze(1)


def _pack_all_linears(module: nn.Module, onednn: bool) -> None:
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, PackedLinear.of(child, onednn=onednn))
        else:
            _pack_all_linears(child, onednn)


def sliced_mlp_blocks(model: nn.Module) -> Iterator[ResidualAttentionBlock]:
    """The blocks whose MLP :func:`pack_for_cpu` runs in ``mlp_parts`` slices, in order: the image tower's
    blocks that :class:`PackedBlock` stands in for, with at least :data:`MLP_SLICE_MIN_HIDDEN` hidden units."""
    visual = getattr(model, "visual", None)
    if not isinstance(visual, VisionTransformer):  # the one open_clip image tower built of such blocks
        return
    for m in visual.transformer.resblocks:
        if (
            isinstance(m, ResidualAttentionBlock)
            and PackedBlock.supports(m)
            and m.mlp.c_fc.out_features >= MLP_SLICE_MIN_HIDDEN
        ):
            yield m


def pack_for_cpu(
    model: nn.Module, onednn: bool = True, pixels: Normalization | None = None, mlp_parts: int = 1
) -> nn.Module:
    """Pack, in place, the linear layers of a bf16 or fp32 CPU inference copy of ``model`` (see the module
    notes; ``onednn`` False, for fp32: blocks as :class:`PackedBlock` on torch's own matmul; ``mlp_parts``:
    each image-tower block's MLP of at least :data:`MLP_SLICE_MIN_HIDDEN` hidden units in that many slices
    of them, text blocks whole: on the AMX Xeon two slices cost a ViT-B-32 text query 0.6 ms of 11.6), a
    ViT image tower's patch embedding as :class:`PatchLinear` (``pixels``: also taking uint8 pixels,
    normalised by this ``(mean, std)``) and, pooling its class token, its transformer as
    :class:`FirstTokenTransformer`.
    The result can no longer be trained, copied or moved; returns ``model``."""
    sliced = {id(block) for block in sliced_mlp_blocks(model)}
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, ResidualAttentionBlock):
                # Blocks PackedBlock cannot stand in for keep their attention and get packed MLP layers.
                if PackedBlock.supports(child):
                    parts = mlp_parts if id(child) in sliced else 1
                    setattr(module, name, PackedBlock(child, onednn, parts))
                else:
                    _pack_all_linears(child.mlp, onednn)
    visual = getattr(model, "visual", None)
    if isinstance(visual, VisionTransformer):
        if PatchLinear.supports(visual.conv1):
            visual.conv1 = PatchLinear(visual.conv1, onednn, pixels)
        if FirstTokenTransformer.supports(visual):
            visual.transformer = FirstTokenTransformer(visual.transformer)
    text = hf_text_tower(model)
    if text is not None:
        _pack_all_linears(text.transformer, onednn)
    return model


def linear_kernel_rates(width: int = 768, rows: int = 1024, rounds: int = 3) -> dict[str, float]:
    """GFLOP/s of one fp32 transformer block (ViT-B-32's width) as :class:`PackedBlock` on each fp32 linear
    kernel, the best of ``rounds`` interleaved rounds."""
    with torch.random.fork_rng():  # the caller's random state stays as it was
        block = ResidualAttentionBlock(width, width // 64).eval()
    blocks = {"onednn": PackedBlock(block, onednn=True), "mkl": PackedBlock(block, onednn=False)}
    x = torch.randn(rows // 64, 64, width, generator=torch.Generator().manual_seed(0))
    flop = 24 * rows * width * width
    best = dict.fromkeys(blocks, 0.0)
    with torch.inference_mode():
        for _ in range(rounds):
            for name, run in blocks.items():
                run(x)  # oneDNN builds its primitives on a shape's first call
                start = time.perf_counter()
                run(x)
                best[name] = max(best[name], flop / (time.perf_counter() - start) / 1e9)
    return {name: round(rate, 1) for name, rate in best.items()}


def mlp_parts_rates(
    dtype: torch.dtype,
    onednn: bool = True,
    parts: tuple[int, ...] = (1, 2),
    width: int = 768,
    rows: int = 800,
    blocks: int = 4,
    rounds: int = 3,
) -> dict[int, float]:
    """GFLOP/s of the MLPs of ``blocks`` transformer blocks (ViT-B-32's width; ``rows``: its 50 tokens of 16
    images) run one after the other, as :class:`PackedBlock` runs them in ``dtype`` in each number of
    ``parts``, the best of ``rounds`` interleaved rounds. Distinct blocks, because in a model each MLP's
    weights come from a cache level farther out than in one MLP called again."""
    with torch.random.fork_rng():  # the caller's random state stays as it was
        plain = [ResidualAttentionBlock(width, width // 64).to(dtype).eval() for _ in range(blocks)]
    packed = {n: [PackedBlock(b, onednn, n) for b in plain] for n in parts}
    x = torch.randn(rows, width, generator=torch.Generator().manual_seed(0)).to(dtype)
    flop = 16 * rows * width * width * blocks
    best = dict.fromkeys(packed, 0.0)
    with torch.inference_mode():
        for chain in packed.values():  # oneDNN builds its primitives on a shape's first call
            for block in chain:
                block.mlp(x, x)
        for _ in range(rounds):
            for n, chain in packed.items():
                start = time.perf_counter()
                for block in chain:
                    block.mlp(x, x)
                best[n] = max(best[n], flop / (time.perf_counter() - start) / 1e9)
    return {n: round(rate, 1) for n, rate in best.items()}
