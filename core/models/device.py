"""Where a model runs and in which number format: one rule for inference and training alike.

Device: ``auto`` (or none given) picks CUDA, then Apple MPS, then the CPU; ``$CAPSEARCH_DEVICE`` stands in
for a device not given.

Precision: ``fp32`` is the exact mode; ``fast`` is the device's fast format: bf16 on CUDA GPUs that support
it (fp16 on others), fp16 on MPS, bf16 on CPUs with native bf16 (AVX512-BF16 / AMX) and ``fp32fast`` on
other CPUs (fp32 arithmetic through the engine's fast path: a copy with oneDNN-prepacked linear layers and
channels-last convolutions, JPEGs decoded at a reduced scale; not bit-exact); ``bf16``, ``fp16`` and
``fp32fast`` name a format outright (no fp16 on the CPU). A precision not given (None or ``auto``)
is ``$CAPSEARCH_PRECISION``, else the path's default: :data:`INFERENCE_DEFAULT` (``fp32``: evaluation and
embedding are exact unless asked) or :data:`TRAINING_DEFAULT` (``fast``: mixed precision, 1.6-2.5x faster
training on such a CPU). Equality tests across runs ask for ``fp32``.

Inference runs a low-precision *copy* of the towers (:mod:`core.embed.engine`): on a 2-core AMD EPYC with
AVX512-BF16 (torch 2.14, ViT-B-32, artifacts/results/bench_embedding.json) a bf16 copy encoded images ~2.1x
and captions ~2x faster than fp32, cosine >= 0.9999 to the fp32 embeddings, 97% identical text->image
top-1, while bf16 *autocast* was slower than fp32 (casts around every op). On a 2-vCPU Xeon with AMX the
fast image path (bf16 copy, prepacked, channels-last, probed threads) ran 4.3x the naive fp32 loop end to
end (artifacts/results/bench_throughput.json). Models with a convolutional image tower (the ``lit-*`` and
compact models) keep their inference copy in fp32 in any format but fp32 (:mod:`core.embed.fp32_fast`:
bf16 moved their Recall@K by up to 0.8 point). Training keeps fp32 weights and runs the forward pass under
autocast (:func:`training_autocast`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from contextlib import AbstractContextManager
from typing import Literal, get_args

import torch

from core.errors import ModelError

DEVICE_ENV = "CAPSEARCH_DEVICE"
PRECISION_ENV = "CAPSEARCH_PRECISION"
Precision = Literal["auto", "fp32", "fast", "fp32fast", "bf16", "fp16"]
Format = Literal["fp32", "fp32fast", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
Default = Literal["fp32", "fast"]
INFERENCE_DEFAULT: Default = "fp32"
TRAINING_DEFAULT: Default = "fast"
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp32fast": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` (or ``$CAPSEARCH_DEVICE``, or ``auto``) as a usable :class:`torch.device`."""
    if isinstance(device, torch.device):
        return device
    wanted = (device or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if wanted == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        dev = torch.device(wanted)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"unknown device {wanted!r}", hint="use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("device cuda was asked for but no CUDA GPU is usable here", hint="use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelError(f"no GPU {dev} (this machine has {torch.cuda.device_count()})")
    if dev.type == "mps" and not _mps_available():
        raise ModelError("device mps was asked for but Apple MPS is not available", hint="use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ModelError(f"unsupported device {wanted!r}", hint="use auto, cpu, cuda or mps")
    return dev


def native_cpu_bf16() -> bool:
    """True when this CPU computes in bf16 natively (AVX512-BF16; every AMX CPU has it too)."""
    return torch.cpu._is_avx512_bf16_supported()


def fast_format(device: torch.device) -> Format:
    """The number format ``fast`` means on ``device`` (see the module docstring)."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    return "bf16" if native_cpu_bf16() else "fp32fast"


def resolve_precision(
    device: torch.device, precision: str | None = None, default: Default = INFERENCE_DEFAULT
) -> Format:
    """The number format for ``precision`` on ``device``; not given: ``$CAPSEARCH_PRECISION``, else
    ``default``."""
    wanted = (precision or "auto").strip().lower()
    if wanted == "auto":
        wanted = (os.environ.get(PRECISION_ENV) or "auto").strip().lower()
    if wanted == "auto":
        wanted = default
    formats: dict[str, Format] = {"fp32": "fp32", "fp32fast": "fp32fast", "bf16": "bf16", "fp16": "fp16"}
    if wanted == "fast":
        return fast_format(device)
    if wanted not in formats:
        raise ModelError(f"unknown precision {wanted!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    if wanted == "fp16" and device.type == "cpu":
        raise ModelError("fp16 is not supported on the CPU", hint="use --precision bf16, fast or fp32")
    if wanted == "bf16" and device.type == "cpu" and not native_cpu_bf16():
        warnings.warn(
            "bf16 on this CPU (no AVX512-BF16 or AMX) is emulated, hundreds of times slower than fp32; "
            "--precision fast runs fp32fast here",
            RuntimeWarning,
            stacklevel=2,
        )
    return formats[wanted]


def training_autocast(device: torch.device, fmt: Format) -> AbstractContextManager[object]:
    """The autocast context a training forward pass runs in for the resolved ``fmt`` (none for fp32 and
    fp32fast: training has no fast path of its own)."""
    if DTYPES[fmt] == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[fmt])
