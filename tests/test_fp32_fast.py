"""Model kinds whose fast copy stays fp32 (core.embed.fp32_fast): a convolutional timm image tower."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torch import nn

from core.embed import fp32_fast
from core.embed.conv_fusion import ConvClamp
from core.embed.engine import encode_images, encode_texts, inference_model
from core.embed.fp32_fast import fold_batch_norms, image_input_dtype
from core.models.checkpoint import build_model, make_preprocess, make_tokenizer
from core.models.loading import LoadedModel, load_model

TEXTS = ["a dog runs through the snow", "two children on a red slide"]


def _randomise_batch_norms(model: nn.Module) -> None:
    """Give every BatchNorm non-trivial statistics and affine weights, so that folding them matters."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) * 2 + 0.05)
            m.weight.data.copy_(torch.randn(n, generator=gen) * 0.5 + 1)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.2)


def _timm_lm(precision: str) -> LoadedModel:
    """A small pretrained-tower-kind model: a random EfficientNet-Lite0 trunk at 64 px, MiniLM text."""
    cfg = open_clip.get_model_config("capsearch-compact-minilm128")
    cfg["embed_dim"] = 32
    cfg["vision_cfg"] = {"image_size": 64, "timm_model_name": "tf_efficientnet_lite0", "timm_pool": "avg",
                         "timm_proj": "linear"}  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(cfg).eval()
    _randomise_batch_norms(model)
    return LoadedModel("lite0-64", None, f"lite0-64-test-{precision}", model, make_preprocess(model),
                       make_tokenizer(cfg), torch.device("cpu"), 32, 32, precision)  # fmt: skip


@pytest.fixture(scope="module")
def timm_pair() -> tuple[LoadedModel, LoadedModel]:
    exact = _timm_lm("fp32")
    return exact, LoadedModel(**{**exact.__dict__, "precision": "bf16"})


def _dtypes(module: nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in module.parameters()}


def test_a_conv_timm_tower_model_runs_fast_in_fp32_with_folded_batch_norms(timm_pair) -> None:
    exact, fast = timm_pair
    cast = inference_model(fast)
    assert cast is not exact.model and _dtypes(cast) == {torch.float32}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in cast.visual.modules())  # folded
    conv = next(m for m in cast.visual.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert image_input_dtype(cast, fast.dtype) == torch.float32
    assert any(isinstance(m, nn.BatchNorm2d) for m in exact.model.modules())  # the loaded model is untouched
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        want, got = exact.model.encode_image(x), cast.encode_image(x)
        all_bf16 = copy.deepcopy(exact.model.visual).to(torch.bfloat16)(x.to(torch.bfloat16)).float()
    # The same values as fp32 up to the folding's rounding; the whole tower in bf16 is much further off.
    assert (want - got).abs().max() <= 1e-4 * want.abs().max()
    assert (want - all_bf16).abs().max() > 10 * (want - got).abs().max()


def test_the_engine_feeds_the_fp32_tower_fp32_pixels(timm_pair, tmp_path: Path) -> None:
    exact, fast = timm_pair
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(paths[-1])
    want, _ = encode_images(exact, paths, batch_size=2)
    got, failed = encode_images(fast, paths, batch_size=2)
    assert not failed and float(np.einsum("nd,nd->n", want, got).min()) > 0.99999
    texts = np.einsum("nd,nd->n", encode_texts(exact, TEXTS), encode_texts(fast, TEXTS))
    assert texts.min() > 0.99999


@pytest.mark.slow
def test_a_fold_that_would_change_the_trunk_is_not_kept(timm_pair, monkeypatch: pytest.MonkeyPatch) -> None:
    _, fast = timm_pair
    monkeypatch.setattr(fp32_fast, "FOLD_CHECK_COSINE", 1.01)  # no fold can pass: the check decides
    lm = LoadedModel(**{**fast.__dict__, "model": copy.deepcopy(fast.model)})
    visual = inference_model(lm).visual
    assert _dtypes(visual) == {torch.float32} and any(isinstance(m, nn.BatchNorm2d) for m in visual.modules())


def test_clip_towers_stay_in_the_fast_format() -> None:
    lm = load_model("capsearch-tiny", device="cpu", precision="bf16")
    cast = inference_model(lm)
    assert _dtypes(cast.visual) == {torch.bfloat16}
    assert image_input_dtype(cast, lm.dtype) == torch.bfloat16


def test_fold_batch_norms_keeps_the_output_and_skips_a_norm_after_no_conv() -> None:
    torch.manual_seed(0)
    act = nn.ReLU6()
    block = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), act, nn.BatchNorm2d(8))
    _randomise_batch_norms(block)
    block.eval()
    x = torch.randn(2, 3, 9, 9)
    with torch.inference_mode():
        want = block(x)
    assert fold_batch_norms(block) == 1
    assert isinstance(block[1], nn.Identity) and isinstance(block[3], nn.BatchNorm2d)
    with torch.inference_mode():
        assert torch.allclose(block(x), want, atol=1e-5)


def test_vectors_of_the_fp32_fast_copy_get_their_own_cache_and_library_keys(timm_pair) -> None:
    from core.embed.fp32_fast import vectors_label
    from core.library.library import computed_in, model_key
    from core.serve.app import model_out

    exact, fast = timm_pair
    tiny = load_model("capsearch-tiny", device="cpu", precision="bf16")
    assert [vectors_label(lm) for lm in (exact, fast, tiny)] == ["fp32", "fp32fast", "bf16"]
    key = model_key("lite0", fast)  # not the key of the earlier all-bf16 fast mode's vectors
    assert key.key.endswith(".fp32fast") and key.precision == "bf16"
    assert model_key("tiny", tiny).key.endswith(".bf16")
    keys = [model_key("lite0", exact), key, model_key("tiny", tiny)]
    assert [computed_in(k) for k in keys] == ["fp32", "fp32fast", "bf16"]  # what library status shows
    models = [model_out(lm) for lm in (exact, fast, tiny)]  # what the service's /v1/models says
    assert [(m["precision"], m["computed_in"]) for m in models] == [
        ("fp32", "fp32"),
        ("bf16", "fp32fast"),
        ("bf16", "bf16"),
    ]


def test_asking_bf16_of_a_model_whose_fast_copy_stays_fp32_is_said(
    timm_pair, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.cli.console import print_format_note

    exact, fast = timm_pair
    tiny = load_model("capsearch-tiny", device="cpu", precision="bf16")
    monkeypatch.delenv("CAPSEARCH_PRECISION", raising=False)
    print_format_note(fast, "BF16")
    assert "computes bf16 in fp32 (vectors: fp32fast)" in capsys.readouterr().err
    for lm, asked in ((fast, "fast"), (fast, None), (tiny, "bf16"), (exact, "fp32")):
        print_format_note(lm, asked)  # asked for fast, or computed as asked: nothing to say
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("CAPSEARCH_PRECISION", "bf16")
    print_format_note(fast, None)
    assert "vectors: fp32fast" in capsys.readouterr().err


@pytest.mark.parametrize("size", [64, 63])
@pytest.mark.parametrize(("kernel", "stride", "groups"), [(3, 2, 8), (5, 2, 8), (3, 2, 1), (5, 1, 8)])
def test_static_same_padding_computes_what_conv2d_same_does(
    size: int, kernel: int, stride: int, groups: int
) -> None:
    torch.manual_seed(size + kernel)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 1), fp32_fast.Conv2dSame(8, 8, kernel, stride, groups=groups))
    fast = copy.deepcopy(trunk)
    assert fp32_fast.static_same_padding(fast, size) == 1
    assert isinstance(fast[1], fp32_fast._StaticSameConv)
    with torch.inference_mode():
        for side in (size, size + 3):  # at the recorded size the plain convolution, else the original
            x = torch.randn(2, 3, side, side)
            want, got = trunk(x), fast(x)
            assert got.shape == want.shape
            assert (want - got).abs().max() <= 1e-5 * want.abs().max()


def test_the_fast_copy_runs_the_tf_trunks_same_padding_statically(timm_pair) -> None:
    cast = inference_model(timm_pair[1])
    static = [m for m in cast.visual.modules() if isinstance(m, fp32_fast._StaticSameConv)]
    assert static  # tf_efficientnet_lite0's strided convolutions
    assert all(m.conv.padding != (0, 0) for m in static if m.conv.stride == (2, 2))
    assert any(isinstance(m, ConvClamp) for m in cast.visual.modules())  # ReLU6 fused


def test_relu_and_relu6_after_a_convolution_are_fused_into_it() -> None:
    torch.manual_seed(3)
    trunk = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Sequential(nn.Identity(), nn.ReLU6()),  # a folded BatchNormAct2d's remains
        nn.Conv2d(8, 8, 1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.GELU(),  # not fused
    ).to(memory_format=torch.channels_last)
    fused = copy.deepcopy(trunk)
    assert fp32_fast.fuse_activations(fused) == 2
    assert [type(m).__name__ for m in fused] == [
        "ConvClamp",
        "Identity",
        "ConvClamp",
        "Identity",
        "Conv2d",
        "GELU",
    ]
    x = (torch.randn(2, 3, 16, 16) * 4).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want, got = trunk(x), fused(x)
    assert (want - got).abs().max() <= 1e-5 * want.abs().max()


def test_the_fp32_copy_of_a_bf16_model_is_packed_where_only_fp32_can_be(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a CPU that packs fp32 but not bf16 (AVX2), an explicit bf16 model whose fast copy is fp32 still gets
    its linear layers packed: packing is gated by the copy's number format, not the model's."""
    from core.embed import engine
    from core.embed.packed import PackedLinear

    monkeypatch.setattr(engine, "packing_available", lambda dtype=torch.float32: dtype == torch.float32)
    lm = _timm_lm("bf16")
    cast = inference_model(lm)
    assert _dtypes(cast) == {torch.float32}
    assert any(isinstance(m, PackedLinear) for m in cast.text.transformer.modules())
