"""Where the image tower's time goes in torch's fast path and in OpenVINO, on one batch: the why behind
the model-only gap in ``bench_throughput.json``.

For ``--model``, on one batch of random images at the model's input size:

* torch: the engine's fast copy under ``torch.profiler``, self CPU time per operator (top ``--top``);
* OpenVINO in the number format torch's fast copy computes in (fp32, or bf16 where the CPU has it; the
  model exported as in ``bench_throughput.py``), with per-node performance counters, time per node type and
  the kernels it picked, for the latency hint (one stream on all threads, as torch runs) and the throughput
  hint (a stream per core);
* images/s of torch fast and both OpenVINO settings in interleaved rounds (median), so that one stream
  against several is measured, not assumed;
* for a transformer fast copy, what its linear layers leave to the rest (``parts``): one stream (one
  thread, the plan's batch) timed whole and with its blocks' attention, LayerNorms or GELU left out, and
  with all three out (the linear layers alone), in interleaved rounds, each against the one-thread matmul
  peak. A timing only: without them the output is not the model's (the last block, at its class token
  alone, keeps them).

Usage: flock /work/bench.lock .venv/bin/python scripts/profile_backends.py --model ViT-B-32 --label "ViT-B-32 (EPYC AVX2)"
Merges the entry into artifacts/results/backend_profile.json.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_throughput import (  # noqa: E402
    PEAK_DTYPES,
    compute_format,
    export_onnx,
    fast_copy_gflop_per_image,
    interleaved_rates,
    matmul_peak,
    openvino_streams_run,
    peak_format,
)
from benchlib import commit, machine_info, previous_results  # noqa: E402

from core.atomic import write_json  # noqa: E402
from core.embed.engine import engine_plan, inference_model, input_shape  # noqa: E402
from core.embed.fp32_fast import image_input_dtype  # noqa: E402
from core.embed.heap import reuse_freed_memory  # noqa: E402
from core.embed.openvino_backend import compile_on_cpu  # noqa: E402
from core.embed.packed import PackedBlock, PackedLinear  # noqa: E402
from core.models.loading import load_model  # noqa: E402
from core.paths import results_dir  # noqa: E402

RESULTS = "backend_profile.json"


def torch_profile(encode: Any, x: torch.Tensor, top: int) -> dict[str, Any]:
    """Self CPU milliseconds of the top operators of one forward pass, and their share of the total."""
    with torch.inference_mode():
        encode(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            encode(x)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    return {
        "total_ms": round(total / 1e3, 1),
        "ops": {
            e.key: {
                "ms": round(e.self_cpu_time_total / 1e3, 1),
                "share": round(e.self_cpu_time_total / total, 3),
            }
            for e in events[:top]
        },
    }


def openvino_profile(compiled: Any, x: np.ndarray, top: int) -> dict[str, Any]:
    """Milliseconds per node type of one synchronous request on the whole batch, and the kernels used."""
    request = compiled.create_infer_request()
    request.infer({0: x})
    start = time.perf_counter()
    request.infer({0: x})
    wall = time.perf_counter() - start
    ms: collections.Counter[str] = collections.Counter()
    kernels: dict[str, set[str]] = collections.defaultdict(set)
    for node in request.profiling_info:
        ms[node.node_type] += node.real_time.total_seconds() * 1e3
        kernels[node.node_type].add(node.exec_type)
    total = sum(ms.values())
    return {
        "request_ms": round(wall * 1e3, 1),
        "total_ms": round(total, 1),
        "node_types": {
            kind: {"ms": round(t, 1), "share": round(t / total, 3), "kernels": sorted(kernels[kind])}
            for kind, t in ms.most_common(top)
        },
    }


PARTS = ("attention", "layer_norm", "gelu")


def _block_without(skip: frozenset[str]) -> Callable[..., Any]:
    """``PackedBlock.attend`` with the parts in ``skip`` left out: attention passes the values through,
    LayerNorm is the identity, the MLP's first layer runs without its activation. The attention that stays
    runs on the kernel ``attend`` would choose."""
    whole = PackedBlock.attend

    def attend(
        self: PackedBlock, x: torch.Tensor, attn_mask: Any = None, past: Any = None, rows: Any = None
    ) -> Any:
        if rows is not None or past is not None or attn_mask is not None:
            return whole(self, x, attn_mask, past, rows)
        b, n, d = x.shape
        ln_1, ln_2 = (nn.Identity(), nn.Identity()) if "layer_norm" in skip else (self.ln_1, self.ln_2)
        qkv = self.qkv(ln_1(x))
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if "attention" in skip:
            mixed = v.transpose(1, 2).reshape(x.shape)
        elif (amx := self.amx_on_this_thread()) is not None:
            mixed = amx(qkv, self.heads)
        else:
            mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape)
        y = self.out(mixed, residual=x)
        if "gelu" not in skip:
            return self.mlp(ln_2(y), y), (k, v)
        z, out = ln_2(y), y
        for fc, proj in zip(self.fc, self.proj, strict=True):
            assert isinstance(fc, PackedLinear)
            if fc.onednn:
                h = torch.ops.mkldnn._linear_pointwise(z, fc.weight, fc.bias, "none", [], "")
            else:
                h = F.linear(z, fc.weight, fc.bias)
            out = proj(h, residual=out)
        return out, (k, v)

    return attend


@contextmanager
def blocks_without(skip: frozenset[str]) -> Iterator[None]:
    """Every :class:`PackedBlock` runs without the parts in ``skip`` inside the block."""
    whole = PackedBlock.attend
    PackedBlock.attend = _block_without(skip)  # type: ignore[method-assign]
    try:
        yield
    finally:
        PackedBlock.attend = whole  # type: ignore[method-assign]


def parts(model: nn.Module, x: torch.Tensor, gflop: float, dtype: torch.dtype, rounds: int) -> dict[str, Any]:
    """One stream of the fast copy (one thread, ``x`` its batch) whole and without each part, and without
    all three: images/s (interleaved rounds) and GFLOP/s against the one-thread matmul peak of ``dtype``."""
    torch.set_num_threads(1)
    peak = max(matmul_peak(dtype).values())
    skips = {"whole": frozenset()} | {f"without_{p}": frozenset([p]) for p in PARTS}
    skips["linear_layers_only"] = frozenset(PARTS)

    def run(skip: frozenset[str]) -> Callable[[], object]:
        def forward() -> object:
            with torch.inference_mode(), blocks_without(skip):
                return model.encode_image(x)

        return forward

    rates = interleaved_rates({name: run(skip) for name, skip in skips.items()}, len(x), rounds)
    for entry in rates.values():
        entry["of_one_thread_peak"] = round(entry["images_per_s"] * gflop / peak, 3)
    return {"batch": len(x), "one_thread_peak_gflop_per_s": peak, "gflop_per_image": round(gflop, 3), **rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--label")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    import openvino as ov

    threads = torch.get_num_threads()
    lm32 = load_model(args.model, device="cpu", precision="fp32")
    fast = load_model(args.model, device="cpu", precision="fast")
    plan = engine_plan(fast)
    model = inference_model(fast)
    x = torch.randn(args.batch, *input_shape(fast), generator=torch.Generator().manual_seed(0))
    layout = torch.channels_last if plan.channels_last else torch.contiguous_format
    xf = x.to(image_input_dtype(model, fast.dtype)).contiguous(memory_format=layout)
    # One stream on all the plan's threads (a streams plan runs one per thread), as OpenVINO below runs.
    torch.set_num_threads(plan.one_stream().threads or threads)
    computes_in = compute_format(fast)
    entry: dict[str, Any] = {
        "model": args.model,
        "fast_format": fast.precision,
        "fast_computes_in": computes_in,
        "batch": args.batch,
    }
    with reuse_freed_memory(), tempfile.TemporaryDirectory() as tmp:
        entry["torch_fast"] = torch_profile(model.encode_image, xf, args.top)
        path = export_onnx(lm32, x, Path(tmp))
        config = {
            "INFERENCE_PRECISION_HINT": {"bf16": "bf16", "fp32": "f32"}[computes_in],
            "INFERENCE_NUM_THREADS": str(threads),
            "PERF_COUNT": "YES",
        }
        compiled = {
            hint: compile_on_cpu(ov, str(path), config | {"PERFORMANCE_HINT": hint})
            for hint in ("LATENCY", "THROUGHPUT")
        }
        xn = x.numpy()
        for hint, c in compiled.items():
            entry[f"openvino_{computes_in}_{hint.lower()}"] = {
                "streams": int(c.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
                **openvino_profile(c, xn, args.top),
            }

        def torch_run() -> object:
            with torch.inference_mode():
                return model.encode_image(xf)

        runs: dict[str, Any] = {"torch_fast": torch_run}
        for hint, c in compiled.items():
            runs[f"openvino_{computes_in}_{hint.lower()}"] = openvino_streams_run(ov, c, xn)[0]
        entry["interleaved_images_per_s"] = interleaved_rates(runs, args.batch, args.rounds)
        if any(isinstance(m, PackedBlock) for m in model.modules()):
            gflop = fast_copy_gflop_per_image(lm32, x[:1])
            dtype = PEAK_DTYPES[peak_format(computes_in)]
            entry["parts"] = parts(model, xf[: plan.batch_size], gflop, dtype, args.rounds)
    entry |= {"machine": machine_info(), "commit": commit(), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = results_dir() / RESULTS
    everything = previous_results(out)
    everything.setdefault("benchmark", __doc__.splitlines()[0])
    everything.setdefault("models", {})[args.label or args.model] = entry
    write_json(out, everything)
    print({k: v["images_per_s"] for k, v in entry["interleaved_images_per_s"].items()}, "->", out)


if __name__ == "__main__":
    main()
