"""The compact models' ResNet image tower made faster (core.embed.resnet_fast): the same outputs as the
open_clip tower, in fp32 to rounding; the fast mode of a compact model is that fp32 copy."""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch
from open_clip.modified_resnet import AttentionPool2d, Bottleneck
from torch import nn

from core.embed import resnet_fast
from core.embed.engine import inference_model
from core.embed.fp32_fast import vectors_label
from core.embed.packed import packing_available
from core.models.checkpoint import build_model
from core.models.loading import LoadedModel

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch has no oneDNN")


def _compact_visual() -> nn.Module:
    """The compact tower with every BatchNorm's statistics and affine map random, so each one counts (open_clip
    starts the last one of each block at zero), and the attention pool's query weights scaled up."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(open_clip.get_model_config("capsearch-compact-minilm128")).eval()
        for m in model.visual.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        model.visual.attnpool.q_proj.weight.data.mul_(30)  # a peaked attention: the query token matters
    return model


@pytest.mark.parametrize("pack", [False, True])
def test_faster_tower_gives_the_same_embeddings(pack: bool) -> None:
    if pack and not packing_available():
        pytest.skip("this torch build has no oneDNN packed linear")
    model = _compact_visual()
    fast = copy.deepcopy(model)
    resnet_fast.fuse_resnet_tower(fast)
    resnet_fast.pool_mean_token(fast, pack)
    kinds = {type(m) for m in fast.visual.modules()}
    assert resnet_fast._FusedBottleneck in kinds and resnet_fast._PooledAttention in kinds
    assert Bottleneck not in kinds and AttentionPool2d not in kinds and nn.BatchNorm2d not in kinds
    x = torch.randn(4, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want, got = model.encode_image(x), fast.encode_image(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(want, got, atol=1e-4, rtol=1e-4)


def test_a_compact_models_fast_copy_is_fused_fp32_with_its_own_vectors_key() -> None:
    """bf16 moved a trained compact model's Recall@K by up to 0.8 point, so its fast mode computes in fp32,
    folded and fused, and keeps its vectors apart from the earlier bf16 ones."""
    model = _compact_visual()
    lm = LoadedModel("c", None, "c-test", model, None, None, torch.device("cpu"), 32, 32, "bf16")
    cast = inference_model(lm)
    assert {p.dtype for p in cast.parameters()} == {torch.float32}
    kinds = {type(m) for m in cast.visual.modules()}
    assert resnet_fast._FusedBottleneck in kinds and resnet_fast._PooledAttention in kinds
    assert vectors_label(lm) == "fp32fast"
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = model.encode_image(x)
        got = cast.encode_image(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(want, got, atol=1e-4, rtol=1e-4)


def test_other_towers_are_left_alone() -> None:
    model = build_model(open_clip.get_model_config("capsearch-tiny")).eval()
    before = [type(m) for m in model.modules()]
    resnet_fast.fuse_resnet_tower(model)
    resnet_fast.pool_mean_token(model, pack=False)
    assert [type(m) for m in model.modules()] == before
