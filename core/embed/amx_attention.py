"""bf16 self-attention of short sequences on AMX tiles, compiled from ``amx_attention.c`` per process.

torch 2.14's CPU flash kernel packs its operands for AMX only in fp16; in bf16 it makes two small oneDNN
gemm calls per image, head and block of 32 queries (768 per ViT-B-32 block of 16 images), and that is
nearly all of its time: 1.55-1.63 ms a block of 16 images on one thread of the AMX Xeon, 14% of the
model's time. This kernel lays out each head's keys and values once for the tiles and runs the two
products there, 16 queries at a time with their softmax in fp32 between them: 0.62-0.65 ms, as close to
fp32 attention as torch's own bf16 kernel is (``tests/test_amx_attention.py``).

It is built with the system's C compiler (``$CC``, else ``cc``) into a temporary folder on first use in a
process (about 0.3 s) and loaded from there: nothing compiled is kept or read back from disk. It runs where
the CPU has AMX-BF16 and the OS grants the process its tiles; elsewhere, or without a compiler, or with
``CAPSEARCH_AMX_ATTENTION=0``, :func:`kernel` is None and :func:`unavailable_reason` says why, and the
packed blocks keep torch's kernel.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import torch

ENV = "CAPSEARCH_AMX_ATTENTION"
HEAD_DIMS = (32, 64)
SOURCE = Path(__file__).with_suffix(".c")
FLAGS = ("-O2", "-fPIC", "-shared", "-mavx512f", "-mavx512bw", "-mavx512bf16", "-mamx-tile", "-mamx-bf16")
COMPILE_TIMEOUT_S = 60

AttentionKernel = Callable[[torch.Tensor, int], torch.Tensor]

_lock = threading.Lock()
_built: tuple[AttentionKernel | None, str | None] | None = None  # the kernel, or why there is none


def _cpu_has_amx_bf16() -> bool:
    """What Linux reports (``/proc/cpuinfo``), so that CPUs without it are spared the build; the library
    checks the CPU itself again, and that the OS grants the tiles."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "").split()
    return "amx_bf16" in flags and "amx_tile" in flags


def _build() -> tuple[ctypes.CDLL | None, str | None]:
    if os.environ.get(ENV, "1").strip() == "0":
        return None, f"switched off by {ENV}=0"
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None, f"needs Linux on x86-64, not {platform.system()} on {platform.machine()}"
    if not _cpu_has_amx_bf16():
        return None, "this CPU lacks AMX-BF16"
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        return None, f"no C compiler: {compiler!r} is not on PATH"
    try:
        with tempfile.TemporaryDirectory(prefix="capsearch-amx-") as folder:
            library = Path(folder) / "amx_attention.so"
            done = subprocess.run(
                [compiler, *FLAGS, "-o", str(library), str(SOURCE)],
                capture_output=True,
                text=True,
                timeout=COMPILE_TIMEOUT_S,
            )
            if done.returncode != 0:
                first = (done.stderr.strip().splitlines() or ["no message"])[0]
                return None, f"{compiler} could not build it (exit {done.returncode}): {first}"
            lib = ctypes.CDLL(str(library))  # mapped now; the folder and its file go when the block ends
    except subprocess.TimeoutExpired:
        return None, f"{compiler} took over {COMPILE_TIMEOUT_S} s to build it"
    except OSError as exc:  # no temporary folder, a compiler that cannot start, a folder mounted noexec
        return None, f"could not build and load it with {compiler}: {exc}"
    lib.capsearch_amx_ready.restype = ctypes.c_int
    lib.capsearch_attention.restype = ctypes.c_int
    lib.capsearch_attention.argtypes = (
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_float,
    )
    if not lib.capsearch_amx_ready():
        return None, "this CPU lacks AVX-512 BW or BF16 beside AMX-BF16, or the OS does not grant its tiles"
    return lib, None


def _attention_on(lib: ctypes.CDLL) -> AttentionKernel:
    def attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
        images, tokens, width = qkv.shape
        dim = width // (3 * heads)
        if (
            qkv.dtype != torch.bfloat16
            or width != 3 * heads * dim
            or dim not in HEAD_DIMS
            or not qkv.is_contiguous()
        ):
            raise ValueError(
                f"AMX attention takes contiguous bf16 [images, tokens, 3 * {heads} heads * 32 or 64], not "
                f"{qkv.dtype} {list(qkv.shape)}"
            )
        out = torch.empty(images, tokens, heads * dim, dtype=torch.bfloat16)
        if lib.capsearch_attention(qkv.data_ptr(), out.data_ptr(), images, tokens, heads, dim, dim**-0.5):
            raise MemoryError(f"AMX attention could not allocate its scratch for {tokens} tokens")
        return out

    return attention


def _kernel_or_reason() -> tuple[AttentionKernel | None, str | None]:
    global _built
    with _lock:
        if _built is None:
            lib, why = _build()
            _built = (None if lib is None else _attention_on(lib), why)
        return _built


def kernel() -> AttentionKernel | None:
    """The attention of a block's fused q, k, v projection (``[images, tokens, 3 * heads * dim]``, bf16,
    contiguous) with ``heads`` heads of ``dim`` (:data:`HEAD_DIMS`), as ``[images, tokens, heads * dim]``, on
    the calling thread; None where it cannot run (:func:`unavailable_reason`). Built once per process."""
    return _kernel_or_reason()[0]


def unavailable_reason() -> str | None:
    """Why :func:`kernel` is None in this process; None when it is not."""
    return _kernel_or_reason()[1]
