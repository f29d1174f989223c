"""The AMX attention kernel (core.embed.amx_attention): as close to fp32 attention as torch's own bf16
kernel, used by the packed blocks where it applies, and switched off with a reason where it cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock

from core.embed import amx_attention, engine
from core.embed.packed import PackedBlock, packing_available
from core.models.loading import load_model

KERNEL = amx_attention.kernel()
needs_amx = pytest.mark.skipif(
    KERNEL is None, reason=f"AMX attention cannot run here: {amx_attention.unavailable_reason()}"
)


def _torch_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    images, tokens, width = qkv.shape
    q, k, v = qkv.view(images, tokens, 3, heads, width // (3 * heads)).permute(2, 0, 3, 1, 4)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(images, tokens, width // 3)


def _qkv(images: int, tokens: int, heads: int, dim: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(images, tokens, 3 * heads * dim, generator=g) * 2).to(torch.bfloat16)


@needs_amx
@pytest.mark.parametrize("dim", amx_attention.HEAD_DIMS)
@pytest.mark.parametrize(
    ("images", "tokens", "heads"),
    # whole and partial tiles of 16 queries and of 32 keys, one token, ViT-B-32's 50 and ViT-B-16's 197
    [
        (3, 50, 12),
        (2, 197, 2),
        (4, 1, 3),
        (2, 16, 1),
        (2, 17, 2),
        (1, 32, 1),
        (1, 33, 2),
        (2, 64, 1),
        (1, 65, 1),
    ],
)
def test_it_is_as_close_to_fp32_attention_as_torchs_bf16_kernel(
    images: int, tokens: int, heads: int, dim: int
) -> None:
    assert KERNEL is not None
    qkv = _qkv(images, tokens, heads, dim)
    exact = _torch_attention(qkv.float(), heads)
    out = KERNEL(qkv, heads)
    assert out.shape == exact.shape and out.dtype == torch.bfloat16
    ours, torchs = ((o.float() - exact).abs() for o in (out, _torch_attention(qkv, heads)))
    assert ours.max() <= 1.5 * torchs.max() + 1e-3
    assert ours.mean() <= 1.5 * torchs.mean() + 1e-4


@needs_amx
def test_rows_whose_scores_lie_far_apart_stay_exact() -> None:
    """Scores in the thousands, one query's far below another's: each row's softmax keeps its own
    maximum."""
    assert KERNEL is not None
    qkv = _qkv(2, 50, 2).float()
    qkv[0, 0, :128] = 30.0  # image 0, query 0: scores near +k's sum, in the thousands
    qkv[0, 1, :128] = -30.0
    qkv[0, :, 128:256] = 1.0  # every key the same: every query attends evenly
    qkv = qkv.to(torch.bfloat16)
    exact = _torch_attention(qkv.float(), 2)
    assert (KERNEL(qkv, 2).float() - exact).abs().max() < 0.05


@needs_amx
def test_it_refuses_what_it_cannot_read() -> None:
    assert KERNEL is not None
    with pytest.raises(ValueError, match="contiguous bf16"):
        KERNEL(_qkv(1, 8, 1).float(), 1)
    with pytest.raises(ValueError, match="contiguous bf16"):
        KERNEL(_qkv(1, 8, 2)[:, :, : 3 * 64], 2)  # a view: rows 3 * 128 apart
    with pytest.raises(ValueError, match="contiguous bf16"):
        KERNEL(_qkv(1, 8, 2, dim=48), 2)
    with pytest.raises(ValueError, match="contiguous bf16"):
        KERNEL(_qkv(2, 8, 1).transpose(0, 1), 1)


@needs_amx
@pytest.mark.skipif(not packing_available(torch.bfloat16), reason="this CPU cannot pack bf16")
@pytest.mark.parametrize("width", [128, 64])  # heads of 64 and of 32
def test_packed_blocks_use_it_for_unmasked_attention_on_one_thread(
    monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        block = ResidualAttentionBlock(width, 2, batch_first=True).to(torch.bfloat16).eval()
    packed = PackedBlock(block)
    assert packed.amx_attention is KERNEL
    calls: list[int] = []

    def counted(qkv: torch.Tensor, heads: int) -> torch.Tensor:
        calls.append(heads)
        return KERNEL(qkv, heads)

    monkeypatch.setattr(packed, "amx_attention", counted)
    x = torch.randn(3, 50, width).to(torch.bfloat16)
    threads = torch.get_num_threads()
    with torch.inference_mode():
        torch.set_num_threads(1)
        try:
            ours = packed(x)
            assert calls == [2]
            plain = block(x)
            packed(x, attn_mask=torch.zeros(50, 50))  # masked: torch's kernel
            assert calls == [2]
            torch.set_num_threads(2)
            packed(x)  # more than one thread: torch's kernel, which splits the heads across them
            assert calls == [2]
        finally:
            torch.set_num_threads(threads)
    assert (ours.float() - plain.float()).abs().max() < 0.1


def test_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amx_attention, "_built", None)
    monkeypatch.setenv(amx_attention.ENV, "0")
    assert amx_attention.kernel() is None
    assert amx_attention.unavailable_reason() == f"switched off by {amx_attention.ENV}=0"


@pytest.mark.parametrize(
    ("compiler", "reason"),
    [
        ("capsearch-no-such-compiler", "no C compiler: 'capsearch-no-such-compiler' is not on PATH"),
        ("false", "false could not build it (exit 1)"),
    ],
)
def test_without_a_working_compiler_it_says_so(
    monkeypatch: pytest.MonkeyPatch, compiler: str, reason: str
) -> None:
    monkeypatch.setattr(amx_attention, "_built", None)
    monkeypatch.setattr(amx_attention, "_cpu_has_amx_bf16", lambda: True)  # so that it gets to the build
    monkeypatch.delenv(amx_attention.ENV, raising=False)
    monkeypatch.setenv("CC", compiler)
    assert amx_attention.kernel() is None
    assert (amx_attention.unavailable_reason() or "").startswith(reason)


def test_the_engine_names_the_attention_kernel_its_packed_copy_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plans are cached under a key that names it, so a machine's plans are probed again when it changes."""
    bf16 = load_model("capsearch-tiny", device="cpu", precision="bf16")
    fp32fast = load_model("capsearch-tiny", device="cpu", precision="fp32fast")
    packs_bf16 = packing_available(torch.bfloat16)
    assert engine.attention_kernel_of(bf16) == ("amx" if KERNEL is not None and packs_bf16 else "torch")
    assert engine.attention_kernel_of(fp32fast) == "torch"
    monkeypatch.setattr(amx_attention, "_built", None)
    monkeypatch.setenv(amx_attention.ENV, "0")
    assert engine.attention_kernel_of(bf16) == "torch"


def test_a_build_that_will_not_load_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A "compiler" whose output is not a library (as a temporary folder mounted noexec also fails)."""
    fake = tmp_path / "fake-cc"
    fake.write_text('#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done\necho "not a library" > "$2"\n')
    fake.chmod(0o755)
    monkeypatch.setattr(amx_attention, "_built", None)
    monkeypatch.setattr(amx_attention, "_cpu_has_amx_bf16", lambda: True)
    monkeypatch.delenv(amx_attention.ENV, raising=False)
    monkeypatch.setenv("CC", str(fake))
    assert amx_attention.kernel() is None
    assert (amx_attention.unavailable_reason() or "").startswith(f"could not build and load it with {fake}: ")


def test_a_cpu_without_amx_is_spared_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amx_attention, "_built", None)
    monkeypatch.setattr(amx_attention, "_cpu_has_amx_bf16", lambda: False)
    monkeypatch.delenv(amx_attention.ENV, raising=False)
    monkeypatch.setenv("CC", "false")  # would fail the build, were it run
    assert amx_attention.kernel() is None
    assert amx_attention.unavailable_reason() == "this CPU lacks AMX-BF16"
