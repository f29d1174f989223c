"""Where a model runs and in which number format the embedding engine runs it.

Device: ``auto`` picks CUDA, then Apple MPS, then the CPU; ``$CAPSEARCH_DEVICE`` or an explicit argument
overrides it. Precision: ``auto`` runs inference in bf16 on CUDA GPUs that support it (fp16 on others and
on MPS) and in exact fp32 on the CPU; ``bf16`` on the CPU is opt-in (fast on CPUs with AVX512-BF16 / AMX).
Measured side by side on such a CPU (2-core AMD EPYC, torch 2.14, ViT-B-32; see
artifacts/results/bench_embedding.json): a bf16 *copy* of the model encoded images ~2.1x and captions ~2x
faster than fp32, cosine >= 0.9999 to the fp32 embeddings, 97% identical text->image top-1; bf16
*autocast* was slower than fp32 (casts around every op). So the engine runs low-precision copies of the
towers rather than autocast, and records the precision with every cache.
"""

from __future__ import annotations

import os

import torch

from core.errors import ModelError

DEVICE_ENV = "CAPSEARCH_DEVICE"
PRECISION_ENV = "CAPSEARCH_PRECISION"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def resolve_precision(device: torch.device, precision: str | None = None) -> str:
    """The inference number format (``fp32``, ``bf16`` or ``fp16``) for ``precision`` on ``device``."""
    wanted = (precision or os.environ.get(PRECISION_ENV) or "auto").strip().lower()
    if wanted not in PRECISIONS:
        raise ModelError(f"unknown precision {wanted!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    if wanted == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "mps":
            return "fp16"
        # Exact by default on the CPU: a bf16 copy is about 2x faster here but moves Recall@K by up to
        # 0.1 point, so it is opt-in (--precision bf16 / $CAPSEARCH_PRECISION=bf16).
        return "fp32"
    if wanted == "fp16" and device.type == "cpu":
        raise ModelError("fp16 inference is not supported on the CPU", hint="use --precision bf16 or fp32")
    return wanted
