"""Prepacked linear layers (core.embed.packed): the same outputs as the plain bf16 model, and in fp32fast as
the exact fp32 model to rounding."""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU, ResidualAttentionBlock
from torch import nn

import core.embed.packed as packed_module
from core.embed.packed import (
    FirstTokenTransformer,
    PackedBlock,
    PackedLinear,
    PatchLinear,
    pack_for_cpu,
    packing_available,
    takes_pixels,
)
from core.models.checkpoint import build_model, make_tokenizer

pytestmark = pytest.mark.skipif(
    not packing_available(), reason="this torch build has no oneDNN packed linear"
)

TEXTS = ["a dog runs through the snow", "two children on a red slide", "people"]


def _bf16_pair(cfg: dict, mlp_parts: int = 1) -> tuple[nn.Module, nn.Module]:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(cfg).eval()
    plain = copy.deepcopy(model).to(torch.bfloat16).eval()
    return plain, pack_for_cpu(copy.deepcopy(model).to(torch.bfloat16).eval(), mlp_parts=mlp_parts)


def _packed_count(model: nn.Module) -> int:
    return sum(isinstance(m, (PackedLinear, PackedBlock)) for m in model.modules())


@pytest.mark.skipif(not packing_available(torch.bfloat16), reason="this CPU cannot pack bf16 (no AVX-512)")
@pytest.mark.parametrize(
    ("name", "mlp_parts"), [("capsearch-tiny", 1), ("capsearch-tiny", 2), ("capsearch-compact-minilm128", 1)]
)
def test_packed_model_matches_the_plain_bf16_model(
    name: str, mlp_parts: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packed_module, "MLP_SLICE_MIN_HIDDEN", 0)  # slice the tiny model's narrow MLPs too
    cfg = open_clip.get_model_config(name)
    plain, packed = _bf16_pair(cfg, mlp_parts)
    assert _packed_count(packed) > 0
    if mlp_parts > 1:
        assert {len(m.fc) for m in packed.visual.modules() if isinstance(m, PackedBlock)} == {mlp_parts}
    if "hf_model_name" in cfg["text_cfg"]:  # every linear layer of a Hugging Face trunk is packed
        assert not any(type(m) is nn.Linear for m in packed.text.transformer.modules())
    tokens = make_tokenizer(cfg)(TEXTS)
    size = cfg["vision_cfg"]["image_size"]
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    with torch.inference_mode():
        for a, b in ((plain.encode_text(tokens), packed.encode_text(tokens)),
                     (plain.encode_image(images), packed.encode_image(images))):  # fmt: skip
            # within two bf16 steps at these magnitudes (up to 3.1): sums in slices round once a slice
            assert torch.allclose(a.float(), b.float(), atol=3e-2, rtol=2e-2)
            assert torch.nn.functional.cosine_similarity(a.float(), b.float()).min() > 0.999


@pytest.mark.parametrize("mlp_parts", [1, 3])
@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("act", [nn.GELU, QuickGELU, lambda: nn.GELU(approximate="tanh")])
@pytest.mark.parametrize("causal", [False, True])
def test_packed_block_equals_the_open_clip_block(
    act: type[nn.Module], causal: bool, onednn: bool, mlp_parts: int
) -> None:
    """On oneDNN's packed kernel and on torch's own matmul, the MLP whole and in slices of its hidden
    units (4 * 32 = 128 of them in 3 slices, of unequal sizes)."""
    torch.manual_seed(0)
    block = ResidualAttentionBlock(32, 4, act_layer=act).eval()
    for p in block.parameters():  # LayerNorm starts at identity; make every weight count
        p.data.normal_(0, 0.2)
    assert PackedBlock.supports(block)
    x = torch.randn(2, 6, 32)
    mask = torch.zeros(6, 6).masked_fill(torch.ones(6, 6).triu(1).bool(), float("-inf")) if causal else None
    with torch.inference_mode():
        want = block(x, attn_mask=mask)
        packed = PackedBlock(block, onednn, mlp_parts)
        got = packed(x, attn_mask=mask)
    assert len(packed.fc) == len(packed.proj) == mlp_parts
    assert torch.allclose(want, got, atol=1e-5)


def test_blocks_packed_block_cannot_stand_in_for_keep_their_attention() -> None:
    model = nn.Sequential(ResidualAttentionBlock(16, 2, ls_init_value=0.1), ResidualAttentionBlock(16, 2))
    pack_for_cpu(model)
    assert isinstance(model[0], ResidualAttentionBlock) and isinstance(model[0].mlp.c_fc, PackedLinear)
    assert isinstance(model[0].attn, nn.MultiheadAttention)
    assert isinstance(model[1], PackedBlock)


def test_packed_block_refuses_cross_attention() -> None:
    block = PackedBlock(ResidualAttentionBlock(8, 2))
    x, y = torch.randn(1, 3, 8), torch.randn(1, 3, 8)
    with pytest.raises(ValueError, match="self-attention"):
        block(x, y, y)


def test_a_packed_linear_fuses_an_activation_or_a_residual_not_both() -> None:
    linear = nn.Linear(8, 8)
    layer = PackedLinear.of(linear, gelu="none")
    x = torch.randn(2, 8)
    with torch.inference_mode():
        assert torch.allclose(layer(x), nn.functional.gelu(linear(x)), atol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        layer(x, residual=x)


@pytest.mark.parametrize("name", ["capsearch-tiny", "capsearch-compact-minilm128"])
def test_fp32fast_copy_is_packed_and_close_to_exact_fp32(name: str) -> None:
    from core.embed.engine import inference_model
    from core.embed.fp32_fast import vectors_label
    from core.models.loading import load_model

    exact = load_model(name, device="cpu", precision="fp32")
    fast = load_model(name, device="cpu", precision="fp32fast")
    copy_ = inference_model(fast)
    assert inference_model(exact) is exact.model and _packed_count(exact.model) == 0
    assert copy_ is not fast.model and _packed_count(copy_) > 0 and _packed_count(fast.model) == 0
    assert next(copy_.parameters()).dtype == torch.float32
    assert (vectors_label(exact), vectors_label(fast)) == ("fp32", "fp32fast")
    size = open_clip.get_model_config(name)["vision_cfg"]["image_size"]
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    tokens = exact.tokenizer(TEXTS)
    with torch.inference_mode():
        for a, b in ((exact.model.encode_text(tokens), copy_.encode_text(tokens)),
                     (exact.model.encode_image(images), copy_.encode_image(images))):  # fmt: skip
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)  # fp32 arithmetic, oneDNN's summation order


@pytest.mark.parametrize("causal", [False, True])
def test_packed_block_attends_to_a_shared_prefix_and_computes_rows_alone(causal: bool) -> None:
    torch.manual_seed(0)
    block = ResidualAttentionBlock(32, 4).eval()
    for p in block.parameters():
        p.data.normal_(0, 0.2)
    packed = PackedBlock(block)
    prefix, suffix = torch.randn(1, 2, 32), torch.randn(3, 5, 32)
    x = torch.cat([prefix.expand(3, -1, -1), suffix], dim=1)
    mask = torch.zeros(7, 7).masked_fill(torch.ones(7, 7).triu(1).bool(), float("-inf")) if causal else None
    rows = torch.tensor([4, 0, 2])
    with torch.inference_mode():
        want = packed(x, attn_mask=mask)
        head, past = packed.attend(prefix, None if mask is None else mask[:2, :2])
        tail = packed.attend(suffix, None if mask is None else mask[2:], past)[0]
        at_rows = packed.attend(suffix, None if mask is None else mask[2:], past, rows)[0]
    if causal:  # the prefix cannot see what follows it
        assert torch.allclose(want[:1, :2], head, atol=1e-5)
    assert torch.allclose(want[:, 2:], tail, atol=1e-5)
    assert at_rows.shape == (3, 32)
    assert torch.allclose(want[torch.arange(3), rows + 2], at_rows, atol=1e-5)


@pytest.mark.parametrize("pool_type", ["tok", "avg"])
def test_a_vit_pooling_its_class_token_runs_its_last_block_at_that_token_alone(pool_type: str) -> None:
    cfg = open_clip.get_model_config("capsearch-tiny")
    cfg = {**cfg, "vision_cfg": {**cfg["vision_cfg"], "pool_type": pool_type}}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(cfg).eval()
    for p in model.visual.parameters():  # attention that differs from token to token
        p.data.normal_(0, 0.2)
    exact = copy.deepcopy(model)
    packed = pack_for_cpu(model)
    transformer = packed.visual.transformer
    assert isinstance(transformer, FirstTokenTransformer) == (pool_type == "tok")
    assert isinstance(packed.visual.conv1, PatchLinear)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got = packed.encode_image(images)
        want = exact.encode_image(images)
        if pool_type == "tok":
            assert transformer(torch.randn(3, 5, 64)).shape == (3, 1, 64)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("size", [64, 70])  # at 70 px the convolution leaves out a 6-pixel remainder
@pytest.mark.parametrize("bias", [False, True])
def test_patch_linear_equals_the_patch_convolution(onednn: bool, size: int, bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 48, 16, stride=16, bias=bias)
    patch = PatchLinear(conv, onednn)
    images = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        want = conv(images)
        for layout in (torch.contiguous_format, torch.channels_last):
            got = patch(images.contiguous(memory_format=layout))
            assert got.shape == want.shape == (2, 48, 4, 4)
            assert torch.allclose(got, want, atol=1e-5)
    assert got.reshape(2, 48, -1).permute(0, 2, 1).is_contiguous()  # open_clip's tokens, without a copy


NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def _pixels_and_normalised(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images laid out as the engine's batches (decoded [h, w, 3], viewed as NCHW) and the same images
    as open_clip's preprocessing normalises them."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORM)
    return pixels, (pixels.float() / 255 - mean) / std


@pytest.mark.parametrize("onednn", [True, False])
def test_patch_linear_takes_uint8_pixels_with_the_normalisation_folded_in(onednn: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 48, 16, stride=16, bias=True)
    patch = PatchLinear(conv, onednn, pixels=NORM)
    pixels, normalised = _pixels_and_normalised()
    with torch.inference_mode():
        want = conv(normalised)
        for layout in (torch.contiguous_format, torch.channels_last):
            assert torch.allclose(patch(pixels.contiguous(memory_format=layout)), want, atol=1e-4)
        assert torch.allclose(patch(normalised), want, atol=1e-5)  # float images still take the plain weight
        with pytest.raises(ValueError, match="uint8"):
            PatchLinear(conv, onednn)(pixels)


def test_bf16_pixels_enter_centred_and_lose_no_precision() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 96, 16, stride=16, bias=False)
    pixels, normalised = _pixels_and_normalised()
    with torch.inference_mode():
        want = conv(normalised)
        bf16 = copy.deepcopy(conv).to(torch.bfloat16)
        from_float = (PatchLinear(bf16)(normalised.to(torch.bfloat16)).float() - want).abs().mean()
        from_pixels = (PatchLinear(bf16, pixels=NORM)(pixels).float() - want).abs().mean()
    assert from_pixels < 1.2 * from_float


def test_a_packed_vit_takes_pixels_when_given_its_normalisation() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(open_clip.get_model_config("capsearch-tiny")).eval()
    exact = copy.deepcopy(model)
    assert not takes_pixels(pack_for_cpu(copy.deepcopy(model)))
    packed = pack_for_cpu(model, pixels=NORM)
    assert takes_pixels(packed)
    pixels, normalised = _pixels_and_normalised()
    with torch.inference_mode():
        assert torch.allclose(packed.encode_image(pixels), exact.encode_image(normalised), atol=1e-4)


def test_only_a_convolution_striding_by_its_kernel_becomes_a_patch_linear() -> None:
    assert PatchLinear.supports(nn.Conv2d(3, 8, 4, stride=4))
    assert not PatchLinear.supports(nn.Conv2d(3, 8, 4, stride=2))
    assert not PatchLinear.supports(nn.Conv2d(3, 8, 4, stride=4, padding=1))
    assert not PatchLinear.supports(nn.Conv2d(4, 8, 4, stride=4, groups=2))
    assert not PatchLinear.supports(nn.Conv2d(3, 8, 4, stride=4, dilation=2))
