"""Image (and caption) throughput near the CPU's limit: every backend on the same images, one model per run.

For one model (``--model``: ViT-B-32 random init, a compact config, or a trained checkpoint dir), in one
process on the same Flickr8k test images:

* end to end (decode + preprocess + encode): the naive open_clip loop in fp32 (PIL in the main thread,
  ``encode_image`` on batches of 32 under no_grad), once as written and once keeping freed memory for
  reuse as the engine does (core.embed.heap: a tower with activations above glibc's mmap threshold, such
  as lit-lite2's, otherwise faults them in afresh on every batch), the engine in fp32 (exact) and in the
  fast mode, each warmed by one pass, then timed in the order ABCDDCBA and averaged per side (this machine
  is shared);
* model only, on one batch of preprocessed images, in interleaved rounds (median reported): torch fp32,
  torch fast (the engine's copy; for a convolutional image tower, lit-lite2's or a compact model's, an fp32 copy: ``fast_computes_in``),
  torch fp32fast where fast computes in bf16 (torch's fastest fp32 arithmetic, to set against the runtimes' fp32), ONNX Runtime
  fp32 (all graph optimisations, ``--threads`` intra-op threads), OpenVINO fp32 and bf16 (throughput
  hint, ``--threads``); the ONNX graph is exported from the loaded model (TorchScript exporter, with
  the fused MHA path off) and checked against torch (least cosine, largest absolute difference);
* decode alone: Pillow's decode, core's ``load_rgb`` (TurboJPEG for JPEGs), decode + preprocess, the
  engine's decode step, simplejpeg alone, and a 4032x3024 JPEG decoded fully against a draft decode (what
  the fast mode uses);
* spawned decode workers (0 = decoding in this process) for the fast engine, start-up included;
* decode threads and streams in this process: the fast engine end to end in one stream with one
  background decode thread (the engine's way before), in one stream with each batch decoded between the
  model's calls split across as many threads, and as its plan runs it (one stream per core where the
  probe kept them, each decoding its own batches), on the Flickr8k files and on 4032x3024 photos made
  from them;
* the roofline: large fp32 and bf16 matmuls' GFLOP/s on this machine (``torch.matmul``, oneDNN's
  prepacked linear, and that linear as one stream per thread; the fastest taken as the peak, also measured
  right before each end-to-end pass, so that each pass has a peak read beside it) against the GFLOP/s each
  path achieves (FLOPs per image counted by torch's FlopCounterMode: the model's for the
  fp32 paths, the fast copy's for the fast ones, which skip work: a ViT's last block runs at the class
  token alone, a ResNet's attention pool at the mean token);
* captions (``--captions``): the naive loop at the full context against the engine, fp32 and fast.

Usage: flock /work/bench.lock .venv/bin/python scripts/bench_throughput.py --model ViT-B-32 [--images 200]
Merges the model's entry into artifacts/results/bench_throughput.json and redraws
artifacts/reports/throughput.png from every entry in it. ``--model-only``: only the model-only backends
(a quick check), written to artifacts/results/bench_throughput_model_only.json.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embedding import agreement, flickr8k_test, naive_images, naive_texts  # noqa: E402
from benchlib import FLICKR8K, clock, commit, machine_info, previous_results, rates  # noqa: E402

from core.atomic import write_json  # noqa: E402
from core.data.images import load_rgb  # noqa: E402
from core.embed import amx_attention, engine  # noqa: E402
from core.embed.engine import _SplitPreprocess, encode_images, encode_texts, engine_plan, inference_model  # noqa: E402
from core.embed.fp32_fast import image_input_dtype  # noqa: E402
from core.embed.heap import reuse_freed_memory  # noqa: E402
from core.embed.openvino_backend import compile_on_cpu  # noqa: E402
from core.embed.packed import pack_for_cpu, packing_available  # noqa: E402
from core.embed.resnet_fast import pool_mean_token  # noqa: E402
from core.embed.split_decode import batch_rows  # noqa: E402
from core.embed.streams import streamed  # noqa: E402
from core.embed.tuning import probe_file  # noqa: E402
from core.models.checkpoint import ClipModel  # noqa: E402
from core.models.loading import LoadedModel, load_model  # noqa: E402
from core.paths import reports_dir, results_dir  # noqa: E402

RESULTS = "bench_throughput.json"
MODEL_ONLY_RESULTS = "bench_throughput_model_only.json"


def best_rate(run: Callable[[], object], items: int, reps: int = 3) -> float:
    """Items per second of ``run`` (one warm-up call, then the best of ``reps``)."""
    run()
    return items / min(clock(run)[1] for _ in range(reps))


def matmul_peak(dtype: torch.dtype, size: int = 2048, reps: int = 6) -> dict[str, float]:
    """GFLOP/s of ``size``-square matmuls on all intra-op threads, through each kernel torch has:
    ``torch.matmul`` (MKL for fp32, slow on AMD CPUs) and oneDNN's prepacked linear (the engine's fast
    path; where this CPU can pack ``dtype``), the latter also as one stream per thread, each on one
    intra-op thread (core.embed.streams, as the engine may run). The peak is the largest. A kernel whose
    first call takes over 5 s (bf16 emulated on a CPU without native bf16) is timed once."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    threads = torch.get_num_threads()
    runs: dict[str, tuple[Callable[[], object], int]] = {"torch.matmul": (lambda: a @ b, 1)}
    if packing_available(dtype):
        packed = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), None)

        def linear(_: object = None) -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")

        runs["onednn_packed_linear"] = (linear, 1)
        if threads > 1:
            runs["onednn_packed_linear_streams"] = (
                lambda: list(streamed(range(threads), linear, threads, 1)),
                threads,
            )
    out = {}
    for name, (run, products) in runs.items():
        first = clock(run)[1]
        rate = 1 / first if first > 5 else best_rate(run, 1, reps)
        out[name] = round(rate * products * 2 * size**3 / 1e9, 1)
    torch.set_num_threads(threads)
    return out


def gflop_per_image(model: ClipModel, x: torch.Tensor) -> float:
    """Multiply-adds x 2 of one image. Grad stays on: under no_grad nn.MultiheadAttention takes its fused
    fast path, which the counter does not see (ViT-B-32 would count 5.9 instead of 8.7 GFLOP)."""
    counter = FlopCounterMode(display=False)
    with counter:
        model.encode_image(x[:1])
    return counter.get_total_flops() / 1e9


def fast_copy_gflop_per_image(lm: LoadedModel, x: torch.Tensor) -> float:
    """What the engine's fast copies compute per image (a ViT's last block at its class token alone, a
    ResNet's attention pool at its mean token alone), counted on the same modules over torch's own matmul,
    which the counter sees."""
    model = copy.deepcopy(lm.model)
    pool_mean_token(model, pack=False)
    if packing_available():
        pack_for_cpu(model, onednn=False)
    return gflop_per_image(model, x)


def decode_alone(lm: LoadedModel, paths: list[Path], min_side: int) -> dict[str, Any]:
    """Images per second of decoding alone (one process), and of full against draft decoding of a
    4032x3024 JPEG made from the first image."""
    sample = paths[:50]
    out: dict[str, Any] = {"images": len(sample), "process": "one, in the main thread"}
    out["pil_decode_per_s"] = round(
        best_rate(lambda: [Image.open(p).convert("RGB") for p in sample], len(sample), 2), 1
    )
    out["load_rgb_per_s"] = round(best_rate(lambda: [load_rgb(p) for p in sample], len(sample), 2), 1)
    out["pil_decode_preprocess_per_s"] = round(
        best_rate(lambda: [lm.preprocess(load_rgb(p)) for p in sample], len(sample), 2), 1
    )
    split = _SplitPreprocess(lm.preprocess)  # what the engine's decode thread runs: pixels to uint8
    out["engine_decode_thread_per_s"] = round(
        best_rate(lambda: [split.load(p, min_side) for p in sample], len(sample), 2), 1
    )
    blobs = [p.read_bytes() for p in sample]
    out["simplejpeg_decode_per_s"] = round(
        best_rate(lambda: [simplejpeg.decode_jpeg(b) for b in blobs], len(sample), 2), 1
    )
    big = Image.open(paths[0]).convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.jpg"
        big.save(path, quality=90)
        full = best_rate(lambda: lm.preprocess(load_rgb(path)), 1)
        draft = best_rate(lambda: lm.preprocess(load_rgb(path, min_side=min_side)), 1)
        a, b = lm.preprocess(load_rgb(path)), lm.preprocess(load_rgb(path, min_side=min_side))
    out["photo_4032x3024"] = {
        "full_decode_preprocess_per_s": round(full, 2),
        "draft_decode_preprocess_per_s": round(draft, 2),
        "speedup": round(draft / full, 2),
        "preprocessed_max_abs_diff": round(float((a - b).abs().max()), 4),
        "preprocessed_mean_abs_diff": round(float((a - b).abs().mean()), 4),
        "draft_min_side": min_side,
    }
    return out


class _ImageOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)


@contextmanager
def mha_fastpath(enabled: bool) -> Iterator[None]:
    """``nn.MultiheadAttention``'s fused inference path on or off inside the block."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def export_onnx(lm: LoadedModel, x: torch.Tensor, folder: Path) -> Path:
    """The image tower of ``lm`` as an ONNX graph with a dynamic batch axis. Under no_grad (timm towers
    keep requires_grad on their weights, which the exporter refuses as constants) with the MHA fast path
    off: in eval mode without grad, ``nn.MultiheadAttention`` calls ``aten::_native_multi_head_attention``,
    which no ONNX opset has; the unfused path it falls back to computes the same attention."""
    path = folder / "image_tower.onnx"
    with torch.no_grad(), mha_fastpath(False):
        _export(lm, x, path)
    return path


def _export(lm: LoadedModel, x: torch.Tensor, path: Path) -> None:
    # A copy whose weights need no grad: the pretrained-tower models leave their package-supplied trunk out
    # of state_dict, so the tracer bakes those weights in as constants, which it refuses while they need grad.
    model = copy.deepcopy(lm.model).eval().requires_grad_(False)
    torch.onnx.export(
        _ImageOnly(model),
        x[:2],
        str(path),
        input_names=["image"],
        output_names=["embedding"],
        dynamic_axes={"image": {0: "n"}, "embedding": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )


Runner = tuple[Callable[[], object], dict[str, Any]]


def onnxruntime_runner(path: Path, x: np.ndarray, threads: int, reference: np.ndarray) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out = session.run(None, {"image": x})[0]
    return lambda: session.run(None, {"image": x}), {"version": ort.__version__, **_close(out, reference)}


def openvino_runner(path: Path, x: np.ndarray, threads: int, hint: str, reference: np.ndarray) -> Runner:
    import openvino as ov

    config = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": hint}
    compiled = compile_on_cpu(ov, str(path), config | {"INFERENCE_NUM_THREADS": str(threads)})
    run, streams = openvino_streams_run(ov, compiled, x)
    out = compiled.create_infer_request().infer({0: x})[0]
    return run, {
        "version": ov.__version__,
        "precision_hint": hint,
        "streams": streams,
        "bf16_supported": "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"),
        **_close(out, reference),
    }


def openvino_streams_run(ov: Any, compiled: Any, x: np.ndarray) -> tuple[Callable[[], None], int]:
    """A call that runs ``x`` through ``compiled`` as one slice per stream its hint chose, in parallel (as
    the throughput hint intends), and the number of streams."""
    streams = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(compiled, streams)
    chunks = np.array_split(x, streams)

    def run() -> None:
        for chunk in chunks:
            queue.start_async({0: chunk})
        queue.wait_all()

    return run, streams


def interleaved_rates(runs: dict[str, Callable[[], object]], items: int, rounds: int) -> dict[str, Any]:
    """Items/s of each of ``runs`` over ``rounds`` rounds, each round running every one once in turn
    (after one warm-up call each), so that a slow spell of this shared machine falls on all of them: the
    median (``images_per_s``), the best and every round's."""
    for run in runs.values():
        run()
    seen: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            seen[name].append(items / clock(run)[1])
    return {
        name: {
            "images_per_s": round(float(np.median(r)), 2),
            "best_images_per_s": round(max(r), 2),
            "rounds": [round(v, 2) for v in r],
        }
        for name, r in seen.items()
    }


def _close(out: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How far ``out`` lies from torch's fp32 output: the least cosine and the largest absolute
    difference of the raw (unnormalised) features, and that difference relative to their largest value."""
    a = out / np.linalg.norm(out, axis=1, keepdims=True)
    b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    diff = float(np.abs(out.astype(np.float32) - reference).max())
    return {
        "min_cosine_to_torch_fp32": round(float(np.einsum("nd,nd->n", a, b).min()), 6),
        "max_abs_diff_to_torch_fp32": float(f"{diff:.3g}"),
        "max_abs_diff_relative": float(f"{diff / float(np.abs(reference).max()):.3g}"),
    }


def torch_run(lm: LoadedModel, x: torch.Tensor, threads: int) -> Callable[[], torch.Tensor]:
    """One forward pass of ``lm``'s image tower on ``x`` as the engine runs it: its inference copy, the
    input's dtype and layout, the threads of its plan and, where it has several streams, ``x`` in its
    batches across them."""
    plan, model = engine_plan(lm), inference_model(lm)
    layout = torch.channels_last if plan.channels_last else torch.contiguous_format
    xs = x.to(image_input_dtype(model, lm.dtype)).contiguous(memory_format=layout)

    def run() -> torch.Tensor:
        if plan.streams > 1:
            batches = [
                xs[rows.start : rows.stop] for rows in batch_rows(len(xs), plan.batch_size, plan.streams)
            ]
            return torch.cat(list(streamed(batches, model.encode_image, plan.streams, plan.threads)))
        torch.set_num_threads(plan.threads or threads)
        with torch.inference_mode():
            return model.encode_image(xs)

    return run


def model_only(
    lm32: LoadedModel,
    fast: LoadedModel,
    x: torch.Tensor,
    threads: int,
    fp32fast: LoadedModel | None = None,
    rounds: int = 5,
) -> dict[str, Any]:
    """Images/s of each backend on the same preprocessed batch ``x`` (no decoding), in interleaved rounds
    (:func:`interleaved_rates`); torch runs as the engine does (:func:`torch_run`, freed memory kept for
    reuse); ``fp32fast``: also torch's fp32fast copy."""
    fp32_run = torch_run(lm32, x, threads)
    reference = fp32_run().numpy()
    runs: dict[str, Callable[[], object]] = {"torch_fp32": fp32_run}
    details: dict[str, dict[str, Any]] = {"torch_fp32": {}}
    for name, lm in (("torch_fast", fast), ("torch_fp32fast", fp32fast)):
        if lm is not None:
            runs[name] = run = torch_run(lm, x, threads)
            details[name] = {
                "format": lm.precision,
                "computes_in": compute_format(lm),
                **_close(run().float().numpy(), reference),
            }
    out: dict[str, Any] = {"batch": len(x), "rounds": rounds}
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            path = export_onnx(lm32, x, Path(tmp))
        except Exception as exc:  # a tower the exporter cannot trace: report it, keep the torch figures
            path = None
            for name in ("onnxruntime_fp32", "openvino_fp32", "openvino_bf16"):
                out[name] = {"skipped": f"ONNX export failed: {type(exc).__name__}: {str(exc)[:200]}"}
        if path is not None:
            out["onnx_export_s"] = round(time.perf_counter() - t0, 1)
            xn = x.numpy()
            for name, make in (
                ("onnxruntime_fp32", lambda: onnxruntime_runner(path, xn, threads, reference)),
                ("openvino_fp32", lambda: openvino_runner(path, xn, threads, "f32", reference)),
                ("openvino_bf16", lambda: openvino_runner(path, xn, threads, "bf16", reference)),
            ):
                try:
                    runs[name], details[name] = make()
                except ImportError as exc:
                    out[name] = {"skipped": f"not installed ({exc.name}); pip install capsearch[bench]"}
        with reuse_freed_memory():  # for the whole comparison, as for a whole engine run
            rated = interleaved_rates(runs, len(x), rounds)
        for name, rate in rated.items():
            out[name] = {**rate, **details[name]}
    torch.set_num_threads(threads)
    out["onnxruntime_fast"] = {
        "skipped": "ONNX Runtime's CPU provider has no bf16 GEMM kernels on x86 (its bf16 fast-math is "
        "for Arm); int8 quantisation would change the model, so it is not a like-for-like fast mode"
    }
    return out


PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def peak_format(computes_in: str) -> str:
    """The matmul peak a path computing in ``computes_in`` is measured against (a key of PEAK_DTYPES)."""
    return "bf16" if computes_in == "bf16" else "fp32"


def compute_format(fast: LoadedModel) -> str:
    """The number format the fast copy's image tower computes in: ``fast.precision``, except for the model
    kinds whose fast copy stays fp32 (core.embed.fp32_fast)."""
    dtype = image_input_dtype(inference_model(fast), fast.dtype)
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def naive_reusing_heap(lm32: LoadedModel, paths: list[Path]) -> np.ndarray:
    """The naive loop with freed memory kept for reuse, as the engine keeps it (core.embed.heap)."""
    with reuse_freed_memory():
        return naive_images(lm32, paths, 32)[0]


def end_to_end(lm32: LoadedModel, fast: LoadedModel, paths: list[Path], computes_in: str) -> dict[str, Any]:
    """Naive fp32 loop (as written, and with freed memory reused), engine fp32 and engine fast on the same
    files, after a warm-up pass of each, in the order ABCDDCBA, each pass right after a matmul peak of its
    precision (``computes_in`` for the fast engine's, see :func:`peak_format`): this shared machine's speed swings from minute to
    minute, and the peak measured beside a pass saw what the pass saw."""
    sides = {
        "naive_fp32": lambda: naive_images(lm32, paths, 32)[0],
        "naive_fp32_heap_reused": lambda: naive_reusing_heap(lm32, paths),
        "engine_fp32": lambda: encode_images(lm32, paths)[0],
        "engine_fast": lambda: encode_images(fast, paths)[0],
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    peaks: dict[str, list[float]] = {name: [] for name in sides}
    fast_dtype = PEAK_DTYPES[peak_format(computes_in)]
    # One pass of each first: a process's first batches of a shape run slower (a 200-image fast pass after
    # warming on 8 images ran 156-164 images/s on the AMX Xeon, the next ones 167-184).
    for run in sides.values():
        run()
    embeddings: dict[str, np.ndarray] = {}
    for name in [*sides, *reversed(sides)]:
        peaks[name].append(max(matmul_peak(fast_dtype if name == "engine_fast" else torch.float32).values()))
        embeddings[name], wall, cpu = clock(sides[name])
        runs[name].append((wall, cpu))
    out: dict[str, Any] = {"images": len(paths)}
    for name, timings in runs.items():
        out[name] = rates(len(paths), timings) | {
            "pass_images_per_s": [round(len(paths) / wall, 2) for wall, _ in timings],
            "adjacent_peak_gflop_per_s": peaks[name],
        }
    for key, naive in (
        ("ratios_to_naive", "naive_fp32"),
        ("ratios_to_naive_heap_reused", "naive_fp32_heap_reused"),
    ):
        out[key] = {
            k: round(out[k]["images_per_s"] / out[naive]["images_per_s"], 2)
            for k in ("engine_fp32", "engine_fast")
        }
    out["engine_fast_vs_naive"] = agreement(embeddings["engine_fast"], embeddings["naive_fp32"])
    out["engine_fp32_vs_naive"] = agreement(embeddings["engine_fp32"], embeddings["naive_fp32"])
    return out


def decode_threads(fast: LoadedModel, paths: list[Path], photos: int) -> dict[str, Any]:
    """The fast engine end to end in one stream on every core with one background decode thread
    (``engine.DECODE_MODE`` background, the engine's way before), in one stream with each batch decoded
    between the model's calls split across as many threads (``engine.STREAMS`` off), and as its plan runs
    it (one stream per core where the probe chose them, each decoding its own batches; else as the
    second), in the order ABCCBA, on the Flickr8k files and on ``photos`` 4032x3024 JPEGs (a phone
    camera's size, decoded in ``draft``): 40 made from the first Flickr8k files, listed over and over."""
    settings = {
        "one_background_thread": ("background", False),
        "between_calls": ("auto", False),
        "default": ("auto", True),
    }
    out: dict[str, Any] = {"plan": engine_plan(fast).__dict__}
    with tempfile.TemporaryDirectory() as tmp:
        made = []
        for i, path in enumerate(paths[:40]):
            made.append(Path(tmp) / f"{i}.jpg")
            load_rgb(path).resize((4032, 3024), Image.Resampling.BICUBIC).save(made[-1], quality=90)
        big = [made[i % len(made)] for i in range(photos)]
        for name, files in (("flickr8k", paths), ("photos_4032x3024", big)):
            runs: dict[str, list[tuple[float, float]]] = {k: [] for k in settings}
            for key in [*settings, *reversed(settings)]:
                engine.DECODE_MODE, engine.STREAMS = settings[key]
                _, wall, cpu = clock(lambda files=files: encode_images(fast, files))
                runs[key].append((wall, cpu))
            engine.DECODE_MODE, engine.STREAMS = "auto", True
            out[name] = {"images": len(files)} | {k: rates(len(files), t) for k, t in runs.items()}
            for other in ("one_background_thread", "between_calls"):
                out[name][f"default_vs_{other}"] = round(
                    out[name]["default"]["images_per_s"] / out[name][other]["images_per_s"], 2
                )
    return out


def workers(fast: LoadedModel, paths: list[Path], counts: tuple[int, ...]) -> dict[str, Any]:
    """The fast engine with each number of spawned decode workers (0: decoding in threads of this
    process, as ``decode_threads`` measures)."""
    out = {}
    for n in counts:
        _, wall, cpu = clock(lambda n=n: encode_images(fast, paths, workers=n))
        out[str(n)] = {
            "images_per_s": round(len(paths) / wall, 2),
            "seconds": round(wall, 2),
            "cpu_s": round(cpu, 2),
        }
    return out


def captions(lm32: LoadedModel, fast: LoadedModel, texts: list[str]) -> dict[str, Any]:
    """The naive loop at the full context against the engine in fp32 and fast, timed in the order naive,
    fp32, fast, fast, fp32, naive and averaged per side (as :func:`end_to_end`)."""
    sides = {
        "naive_fp32": lambda: naive_texts(lm32, texts, 128),
        "engine_fp32": lambda: encode_texts(lm32, texts, 128),
        "engine_fast": lambda: encode_texts(fast, texts, 128),
    }
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    out: dict[str, np.ndarray] = {}
    for name in [*sides, *reversed(sides)]:
        out[name], wall, _ = clock(sides[name])
        seconds[name].append(wall)
    mean = {name: sum(s) / len(s) for name, s in seconds.items()}
    n = len(texts)
    return {
        "captions": n,
        **{f"{name}_per_s": round(n / mean[name], 2) for name in sides},
        "seconds": {name: [round(s, 2) for s in seconds[name]] for name in sides},
        "ratios_to_naive": {
            name: round(mean["naive_fp32"] / mean[name], 2) for name in ("engine_fp32", "engine_fast")
        },
        "engine_fast_vs_naive": agreement(out["engine_fast"], out["naive_fp32"]),
        "engine_fp32_vs_naive": agreement(out["engine_fp32"], out["naive_fp32"]),
    }


def roofline(
    result: dict[str, Any], gflop: float, fast_gflop: float, peaks: dict[str, float]
) -> dict[str, Any]:
    """Achieved GFLOP/s of each path against the measured matmul peak of its precision (the largest seen in
    the run, the ones read beside the end-to-end passes included): ``gflop`` per image for the exact fp32 model, ``fast_gflop`` for the fast copies (what they
    compute); for an end-to-end path also the mean over its passes of each against the peak measured
    beside it (``of_adjacent_peak``)."""
    e2e, mo = result["end_to_end"], result["model_only"]
    fast = peak_format(result.get("fast_computes_in", result["fast_format"]))
    paths = [
        ("naive_fp32 (end to end)", e2e["naive_fp32"], gflop, "fp32"),
        ("naive_fp32_heap_reused (end to end)", e2e["naive_fp32_heap_reused"], gflop, "fp32"),
        ("engine_fp32 (end to end)", e2e["engine_fp32"], gflop, "fp32"),
        ("engine_fast (end to end)", e2e["engine_fast"], fast_gflop, fast),
        ("torch_fp32 (model only)", mo["torch_fp32"], gflop, "fp32"),
        ("torch_fast (model only)", mo["torch_fast"], fast_gflop, fast),
    ]
    if "torch_fp32fast" in mo:
        paths.append(("torch_fp32fast (model only)", mo["torch_fp32fast"], fast_gflop, "fp32"))
    peaks = dict(peaks)
    for _, entry, _, fmt in paths:
        peaks[fmt] = max([peaks[fmt], *entry.get("adjacent_peak_gflop_per_s", [])])
    rows = {}
    for name, entry, work, fmt in paths:
        achieved = entry["images_per_s"] * work
        rows[name] = {"gflop_per_s": round(achieved, 1), "of_peak": round(achieved / peaks[fmt], 3)}
        if "adjacent_peak_gflop_per_s" in entry:
            shares = [
                rate * work / beside
                for rate, beside in zip(
                    entry["pass_images_per_s"], entry["adjacent_peak_gflop_per_s"], strict=True
                )
            ]
            rows[name]["of_adjacent_peak"] = round(float(np.mean(shares)), 3)
    return {
        "gflop_per_image": round(gflop, 3),
        "fast_copy_gflop_per_image": round(fast_gflop, 3),
        "matmul_peak_gflop_per_s": peaks,
        "paths": rows,
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip/capsearch config or checkpoint dir")
    parser.add_argument("--label", help="the entry's name in the results (default: the model's name)")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--captions", type=int, default=0, help="captions to time (0: skip)")
    parser.add_argument("--batch", type=int, default=32, help="the model-only batch")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1], help="decode workers to time")
    parser.add_argument("--photos", type=int, default=400, help="4032x3024 JPEGs for decode_threads")
    parser.add_argument("--flickr8k", type=Path, default=FLICKR8K)
    parser.add_argument(
        "--model-only",
        action="store_true",
        help=f"only the model-only backends (a quick check); written to {MODEL_ONLY_RESULTS}, not merged",
    )
    return parser.parse_args()


def main() -> None:
    args = arguments()
    threads = torch.get_num_threads()
    info, load_start, cpu_start = machine_info(), os.getloadavg()[0], time.process_time()
    t_start = time.perf_counter()
    paths, texts = flickr8k_test(args.flickr8k, args.images, args.captions)
    lm32 = load_model(args.model, device="cpu", precision="fp32")
    fast = load_model(args.model, device="cpu", precision="fast")
    computes_in = compute_format(fast)
    fp32fast = None if computes_in == "fp32" else load_model(args.model, device="cpu", precision="fp32fast")
    plans = {"fp32": engine_plan(lm32).__dict__, "fast": engine_plan(fast).__dict__}
    if fp32fast is not None:
        plans["fp32fast"] = engine_plan(fp32fast).__dict__
    print(f"{args.model}: plans {plans}", file=sys.stderr)
    x = torch.stack([lm32.preprocess(load_rgb(p)) for p in paths[: args.batch]])
    label = args.label or args.model.rstrip("/").split("/")[-1]
    if args.model_only:
        result: dict[str, Any] = {"model": args.model, "model_id": lm32.model_id, "threads": threads}
        result |= {"fast_format": fast.precision, "model_only": model_only(lm32, fast, x, threads, fp32fast)}
        finish(result, info, load_start, cpu_start, t_start)
        save_model_only(label, result)
        return
    kernels = {fmt: matmul_peak(dtype) for fmt, dtype in PEAK_DTYPES.items()}
    result = {
        "model": args.model,
        "model_id": lm32.model_id,
        "fast_format": fast.precision,
        "fast_computes_in": computes_in,
        "input_shape": list(x.shape[1:]),
        "threads": threads,
        "engine_plans": plans,
        "probe_cache": str(probe_file().name),
        "end_to_end": end_to_end(lm32, fast, paths, computes_in),
    }
    peaks = {fmt: max(rates.values()) for fmt, rates in kernels.items()}
    result["model_only"] = model_only(lm32, fast, x, threads, fp32fast)
    work = gflop_per_image(lm32.model, x), fast_copy_gflop_per_image(lm32, x)
    result["roofline"] = roofline(result, *work, peaks) | {"matmul_kernels": kernels}
    result["decode_alone"] = decode_alone(lm32, paths, max(x.shape[2:]))
    result["decode_workers"] = workers(fast, paths, tuple(args.workers))
    result["decode_threads"] = decode_threads(fast, paths, args.photos)
    if texts:
        result["captions"] = captions(lm32, fast, texts)
    finish(result, info, load_start, cpu_start, t_start)
    save(label, result)


def finish(
    result: dict[str, Any], info: dict[str, Any], load_start: float, cpu_start: float, t_start: float
) -> None:
    """Add the machine, load, time and commit to ``result``."""
    result["machine"] = {
        **info,
        "cpu_flags_bf16": {
            "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
            "amx": torch.cpu._is_amx_tile_supported(),
        },
    }
    result["bf16_attention"] = amx_attention.unavailable_reason() or "amx"  # else why torch's kernel runs
    result["load_average_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["cpu_s"] = round(time.process_time() - cpu_start, 1)
    result["commit"] = commit()
    result["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S")


def save_model_only(label: str, result: dict[str, Any]) -> None:
    """Merge a ``--model-only`` run's entry into its own file (the full results stay untouched)."""
    out = results_dir() / MODEL_ONLY_RESULTS
    everything = previous_results(out) or {
        "benchmark": "model-only backends of " + RESULTS + " (quick check)"
    }
    everything.setdefault("models", {})[label] = result
    write_json(out, everything)
    print(json.dumps(result["model_only"], indent=1), f"-> {out}", sep="\n")


def save(label: str, result: dict[str, Any]) -> None:
    out = results_dir() / RESULTS
    everything = previous_results(out)
    everything.setdefault("benchmark", __doc__.splitlines()[0])
    everything.setdefault("models", {})[label] = result
    e2e, mo = result["end_to_end"], result["model_only"]
    everything.setdefault("history", []).append(  # every run's headline, the latest in full under models
        {
            "model": label,
            "timestamp": result["timestamp"],
            "commit": result["commit"],
            "cpu": result["machine"]["cpu"],
            "load_average_1min": result["load_average_1min"],
            "images_per_s": {
                k: v["images_per_s"] for k, v in e2e.items() if isinstance(v, dict) and "images_per_s" in v
            },
            "model_only_images_per_s": {
                k: v["images_per_s"] for k, v in mo.items() if isinstance(v, dict) and "images_per_s" in v
            },
        }
    )
    write_json(out, everything)
    plot(everything, reports_dir() / "throughput.png")
    e2e = result["end_to_end"]
    print(
        f"{label} on {result['machine']['cpu']}: naive {e2e['naive_fp32']['images_per_s']}/s "
        f"({e2e['naive_fp32_heap_reused']['images_per_s']}/s reusing freed memory), engine fp32 "
        f"{e2e['engine_fp32']['images_per_s']}/s, fast {e2e['engine_fast']['images_per_s']}/s "
        f"({e2e['ratios_to_naive']['engine_fast']}x) -> {out}"
    )


def plot(everything: dict[str, Any], target: Path) -> None:
    """One panel per model, three to a row: images/s of every path (end to end and model only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = everything["models"]
    cols = min(3, len(models))
    rows = -(-len(models) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.5 * rows), squeeze=False)
    for ax in axes.flat[len(models) :]:
        ax.axis("off")
    for ax, (label, r) in zip(axes.flat, models.items(), strict=False):
        bars = {
            f"{k} e2e": v["images_per_s"]
            for k, v in r["end_to_end"].items()
            if isinstance(v, dict) and "images_per_s" in v
        }
        bars |= {
            f"{k}": v["images_per_s"]
            for k, v in r["model_only"].items()
            if isinstance(v, dict) and "images_per_s" in v
        }
        ax.barh(list(bars), list(bars.values()), color=["#888" if "e2e" in k else "#3a7" for k in bars])
        ax.set_title(
            f"{label} ({r.get('fast_computes_in', r['fast_format'])} fast)\n{r['machine']['cpu']}, load {r['load_average_1min'][0]}",
            fontsize=9,
        )
        ax.set_xlabel("images/s")
        ax.invert_yaxis()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    target.parent.mkdir(parents=True, exist_ok=True)
    from core.atomic import write_bytes

    write_bytes(target, buffer.getvalue())


if __name__ == "__main__":
    main()
