"""Prepacked bf16 linear layers (core.embed.packed): the same outputs as the plain bf16 model."""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch
from torch import nn

from core.embed.packed import PackedLinear, PackedSelfAttention, pack_for_cpu, packing_available
from core.models.checkpoint import build_model, make_tokenizer

pytestmark = pytest.mark.skipif(
    not packing_available(), reason="this torch build has no oneDNN packed linear"
)

TEXTS = ["a dog runs through the snow", "two children on a red slide", "people"]


def _bf16_pair(cfg: dict) -> tuple[nn.Module, nn.Module]:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(cfg).eval()
    plain = copy.deepcopy(model).to(torch.bfloat16).eval()
    return plain, pack_for_cpu(copy.deepcopy(model).to(torch.bfloat16).eval())


def _packed_count(model: nn.Module) -> int:
    return sum(isinstance(m, (PackedLinear, PackedSelfAttention)) for m in model.modules())


@pytest.mark.parametrize("name", ["capsearch-tiny", "capsearch-compact-minilm128"])
def test_packed_model_matches_the_plain_bf16_model(name: str) -> None:
    cfg = open_clip.get_model_config(name)
    plain, packed = _bf16_pair(cfg)
    assert _packed_count(packed) > 0
    if "hf_model_name" in cfg["text_cfg"]:  # every linear layer of a Hugging Face trunk is packed
        assert not any(type(m) is nn.Linear for m in packed.text.transformer.modules())
    tokens = make_tokenizer(cfg)(TEXTS)
    size = cfg["vision_cfg"]["image_size"]
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    with torch.inference_mode():
        for a, b in ((plain.encode_text(tokens), packed.encode_text(tokens)),
                     (plain.encode_image(images), packed.encode_image(images))):  # fmt: skip
            assert torch.allclose(a.float(), b.float(), atol=2e-2, rtol=2e-2)
            assert torch.nn.functional.cosine_similarity(a.float(), b.float()).min() > 0.999


@pytest.mark.parametrize("bool_mask", [False, True])
def test_packed_self_attention_equals_multihead_attention(bool_mask: bool) -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x = torch.randn(2, 6, 32)
    blocked = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    mask = blocked if bool_mask else torch.zeros(6, 6).masked_fill(blocked, float("-inf"))
    with torch.inference_mode():
        want = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
        got = PackedSelfAttention(mha)(x, x, x, need_weights=False, attn_mask=mask)[0]
    assert torch.allclose(want, got, atol=1e-5)


def test_packed_attention_refuses_cross_attention() -> None:
    attn = PackedSelfAttention(nn.MultiheadAttention(8, 2, batch_first=True))
    x, y = torch.randn(1, 3, 8), torch.randn(1, 3, 8)
    with pytest.raises(ValueError, match="self-attention"):
        attn(x, y, y)
