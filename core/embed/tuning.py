"""Per-machine settings of the image engine on the CPU, chosen by a short probe and cached.

The fastest intra-op thread count, image batch size, input memory layout and number of concurrent model
streams (:mod:`core.embed.streams`) depend on the CPU (AMX or AVX512-BF16 or neither, core count), on
the model and on its number format. :func:`image_plan` times a few forward passes of synthetic images
once per machine, model and format (a few seconds; the fp32 ViT-B-32 takes longest; only for a run of at
least :data:`PROBE_MIN_IMAGES` images, so that a small job never waits for it) and keeps the winner in
``<artifacts>/cache/engine_probe/<machine>.json`` (written atomically under a lock, so concurrent probes
never corrupt it). ``$CAPSEARCH_PROBE=0`` skips the probe and uses :data:`DEFAULT_PLAN`. Accelerators
skip it too (their batch is the caller's).

The exact fp32 mode only gets a thread count, streams and a batch size (which do not change any value: in
two streams of 16 on the AMX Xeon, ViT-B-32's fp32 vectors equalled the naive loop's); the input layout
is probed for the fast formats only. :func:`fp32_linear_kernel` times oneDNN's packed linear
against torch's own matmul once per machine for fp32fast copies, and :func:`mlp_parts` a packed block's
MLP whole against in slices of its hidden units, both kept in the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from core.atomic import write_json
from core.embed.heap import reuse_freed_memory
from core.embed.packed import linear_kernel_rates, mlp_parts_rates
from core.embed.streams import streamed
from core.locks import exclusive
from core.paths import artifacts_root

PROBE_ENV = "CAPSEARCH_PROBE"
# 2: convolutional timm image towers' fast copy is fp32 (fp32_fast); 3: larger batches kept unless slower;
# 4: timed with freed memory kept for reuse (core.embed.heap), as the engine now runs; 5: fp32 copies on the
# measured linear kernel (fp32_linear_kernel); 6: a ViT's last block at its class token alone
# (FirstTokenTransformer), a bf16 compact ResNet folded and fused (fuse_resnet_tower); 7: the compact
# models' fast copy is fp32 (fp32_fast); 8: settings timed in turns, each the best of its calls (MIN_TIMED_S);
# 9: one model stream per core (core.embed.streams) against one stream on all cores, in the caller's thread
PROBE_VERSION = 9
BATCH_SIZES = (16, 32, 64)
# A batch size is only probed when one batch is predicted to take at most this long (ViT-B-32 in fp32 on a
# 2-vCPU AVX2 EPYC: 32 images in about 3.6 s).
MAX_PROBE_BATCH_S = 4.0
# Runs of fewer images than this use a cached plan when there is one and never start a probe.
PROBE_MIN_IMAGES = 256
# Another thread count or layout must beat the current one by this factor to be chosen (timing noise); a
# larger batch is kept unless it is slower by this factor: it spreads the per-batch work the probe does not
# time (normalising, the layout copy, the loop) over more images. On a 2-vCPU AMD EPYC (AVX2) ViT-B-32's
# fp32fast copy probed 11.96 images/s at batch 16 and not 5% more at 32, yet ran 5-15% faster end to end
# at 32 in each of four rounds. Streams (core.embed.streams) are kept the same way: on the idle AMX Xeon
# ViT-B-32 in bf16 probed 188.5 images/s in one stream of 64 and not more in two, yet end to end on 400
# Flickr8k files two streams of 16 ran 195.9 images/s against 182.6 (medians of 4 interleaved rounds).
MARGIN = 1.05
# Each setting is timed as the best of its calls over at least this long (at most MAX_TIMED_CALLS calls),
# the settings compared taking turns (_best_rates): a compact model's call takes 40-160 ms, and timed once,
# one setting after the other, the probe's choice followed the VM's jitter (six probes of one model on a
# 2-vCPU AMD EPYC (Zen 5) chose batches 16, 16, 32, 64, 64, 32 and once channels-last).
MIN_TIMED_S = 0.3
MAX_TIMED_CALLS = 5
# One stream on all cores against one per core (_stream_rates): each stream makes this many calls a round,
# for this many rounds after a warm-up round.
STREAM_CALLS = 2
STREAM_ROUNDS = 2
K = TypeVar("K")
Setting = tuple[torch.Tensor, int]  # an input batch and the intra-op threads to run it on


@dataclass(frozen=True)
class ImagePlan:
    """How the engine runs an image tower on this machine, and the images/s the probe measured."""

    batch_size: int
    threads: int
    channels_last: bool
    images_per_s: float = 0.0
    probed: bool = False
    streams: int = 1  # concurrent model streams, each on ``threads`` (core.embed.streams)

    def one_stream(self) -> ImagePlan:
        """This plan as one stream on all its streams' threads, with all their images in a batch."""
        if self.streams == 1:
            return self
        return replace(
            self, batch_size=self.batch_size * self.streams, threads=self.threads * self.streams, streams=1
        )


DEFAULT_PLAN = ImagePlan(batch_size=64, threads=0, channels_last=False)  # threads 0: leave torch's
# What the kernel probes (fp32_linear_kernel, mlp_parts) know in this process: each one's choice once cached
# or measured, and the ones the probe file had none of (every query asks, and finding the file takes a ms).
_kernels: dict[str, str] = {}
_unread: set[str] = set()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else what the platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    """The cores this process may run on (its affinity: fewer than the machine's under ``taskset`` or a
    container's CPU set)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def machine_key() -> str:
    """What a probe result depends on besides the model: CPU model, the cores this process may use, bf16
    support, torch."""
    parts = [
        cpu_model(),
        str(cpu_cores()),
        str(torch.get_num_threads()),
        str(torch.cpu._is_avx512_bf16_supported()),
        str(torch.cpu._is_amx_tile_supported()),
        torch.__version__,
        str(PROBE_VERSION),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def probe_file() -> Path:
    """The probe cache of this machine under the artifacts root."""
    return artifacts_root() / "cache" / "engine_probe" / f"{machine_key()}.json"


def _read_section(path: Path, section: str) -> dict[str, Any]:
    """One section (``plans``, ``kernels``) of a probe cache; empty when missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    entries = data.get(section) if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def _store(path: Path, section: str, key: str, value: Any) -> None:
    """Set ``section[key]`` in the probe cache, atomically under its lock."""
    with exclusive(path.parent):
        sections = {name: _read_section(path, name) for name in ("plans", "kernels")}
        sections[section][key] = value
        write_json(path, {"machine": cpu_model(), "torch": torch.__version__, **sections})


def _kernel_choice(
    name: str, choices: tuple[str, ...], measure: Callable[[], dict[str, float]], probe: bool
) -> str:
    """This machine's choice ``name`` among ``choices`` (the first: the default), cached in the probe
    file's kernels section; not cached: measured (``probe``; ``measure`` gives each choice's rate, and
    another must beat the default by :data:`MARGIN`) or the default."""
    if name in _kernels:
        return _kernels[name]
    default = choices[0]
    no_probe = os.environ.get(PROBE_ENV, "1").strip() == "0" or not probe
    if no_probe and name in _unread:
        return default
    path = probe_file()
    cached = _read_section(path, "kernels").get(name)
    if isinstance(cached, dict) and cached.get("choice") in choices:
        _kernels[name] = str(cached["choice"])
        return _kernels[name]
    _unread.add(name)
    if no_probe:
        return default
    rates = measure()
    best = max(choices, key=lambda c: rates[c])
    choice = best if rates[best] > rates[default] * MARGIN else default
    _store(path, "kernels", name, {"choice": choice, "gflop_per_s": rates})
    _kernels[name] = choice
    return choice


def fp32_linear_kernel(probe: bool = True) -> str:
    """The faster fp32 linear kernel of this machine for packed copies (:mod:`core.embed.packed`):
    ``onednn`` or ``mkl``, cached; not cached: measured (``probe``, about a second) or ``onednn``, the one
    that held its speed under load. MKL must win by :data:`MARGIN`."""
    return _kernel_choice("fp32 linear", ("onednn", "mkl"), linear_kernel_rates, probe)


def mlp_parts(copy_format: str, onednn: bool, probe: bool = True) -> int:
    """How many slices of its hidden units a packed transformer block's MLP runs in on this machine
    (:class:`core.embed.packed.PackedBlock`), for a copy in ``copy_format`` (``bf16``, ``fp32``) on oneDNN
    (``onednn``) or torch's own matmul: 2 where ViT-B-32-sized MLPs ran faster in two slices by
    :data:`MARGIN`, timed on one thread as one of the engine's streams runs them
    (:func:`core.embed.packed.mlp_parts_rates`, about a second), else 1; cached as
    :func:`fp32_linear_kernel` is."""
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[copy_format]

    def measure() -> dict[str, float]:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return {str(n): rate for n, rate in mlp_parts_rates(dtype, onednn).items()}
        finally:
            torch.set_num_threads(previous)

    name = f"mlp parts {copy_format}|{'onednn' if onednn else 'mkl'}"
    return int(_kernel_choice(name, ("1", "2"), measure, probe))


def _plan_of(entry: Any) -> ImagePlan | None:
    if not isinstance(entry, dict):
        return None
    try:
        plan = ImagePlan(
            batch_size=int(entry["batch_size"]),
            threads=int(entry["threads"]),
            channels_last=bool(entry["channels_last"]),
            images_per_s=float(entry.get("images_per_s", 0.0)),
            probed=True,
            streams=int(entry.get("streams", 1)),
        )
    except (KeyError, TypeError, ValueError):
        return None
    return plan if plan.batch_size > 0 and plan.threads > 0 and plan.streams > 0 else None


def _best_rates(encode: Callable[[torch.Tensor], object], settings: dict[K, Setting]) -> dict[K, float]:
    """Images/s of each setting, the best of its calls. The settings take turns, one call each per round
    after a warm-up call each (oneDNN builds its primitives for a new shape on the first), until each has
    spent :data:`MIN_TIMED_S` or made :data:`MAX_TIMED_CALLS` calls: a slow second of the machine falls on
    all of them alike."""
    previous = torch.get_num_threads()
    timed: dict[K, list[float]] = {key: [] for key in settings}
    try:
        with torch.inference_mode():
            for round_ in range(MAX_TIMED_CALLS + 1):
                for key, (x, threads) in settings.items():
                    if round_ and sum(timed[key]) >= MIN_TIMED_S:
                        continue
                    torch.set_num_threads(threads)
                    start = time.perf_counter()
                    encode(x)
                    if round_:
                        timed[key].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return {key: settings[key][0].shape[0] / min(calls) for key, calls in timed.items()}


def _stream_rates(
    encode: Callable[[torch.Tensor], object], settings: dict[K, tuple[torch.Tensor, int, int]]
) -> dict[K, float]:
    """Images/s of each setting (a batch, its streams, each stream's intra-op threads): the streams call
    ``encode`` on the batch concurrently (:func:`core.embed.streams.streamed`; one stream in this thread,
    as the engine runs it: a new thread's glibc arena maps a large activation afresh on every call),
    :data:`STREAM_CALLS` calls each; the settings take turns for :data:`STREAM_ROUNDS` rounds after a
    warm-up round, each keeping its best."""
    previous = torch.get_num_threads()
    best = dict.fromkeys(settings, 0.0)
    try:
        for round_ in range(STREAM_ROUNDS + 1):
            for key, (x, streams, threads) in settings.items():
                calls = streams * (STREAM_CALLS if round_ else 1)
                start = time.perf_counter()
                if streams == 1:
                    torch.set_num_threads(threads)
                    with torch.inference_mode():
                        for _ in range(calls):
                            encode(x)
                else:
                    for _ in streamed([x] * calls, encode, streams, threads):
                        pass
                if round_:
                    best[key] = max(best[key], calls * x.shape[0] / (time.perf_counter() - start))
    finally:
        torch.set_num_threads(previous)
    return best


def probe_images(
    encode: Callable[[torch.Tensor], object],
    shape: tuple[int, ...],
    dtype: torch.dtype,
    layouts: bool,
) -> ImagePlan:
    """Time ``encode`` on random images (:func:`_best_rates`): 1 thread against all at batch 16, then the
    batch sizes (the largest kept that is not slower than the fastest by :data:`MARGIN`), then
    (``layouts``) a channels-last input (which, as another thread count, must win by :data:`MARGIN`), then,
    with several threads, one stream per thread at batch 16 against that (:func:`_stream_rates`; kept
    unless slower by :data:`MARGIN`, as a larger batch is: the streams also overlap one's decoding with
    the other's compute, which the probe does not time)."""
    threads_all = max(1, torch.get_num_threads())

    def images(n: int, channels_last: bool = False) -> torch.Tensor:
        x = torch.randn(n, *shape).to(dtype)
        return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x

    first = images(BATCH_SIZES[0])
    by_threads = _best_rates(encode, {t: (first, t) for t in sorted({1, threads_all})})
    threads = max(by_threads, key=lambda t: by_threads[t] * (MARGIN if t == threads_all else 1.0))
    sizes = [n for n in BATCH_SIZES if n == len(first) or n / by_threads[threads] <= MAX_PROBE_BATCH_S]
    by_size = _best_rates(encode, {n: (images(n), threads) for n in sizes})
    size = max(n for n in sizes if by_size[n] * MARGIN >= max(by_size.values()))
    plan = ImagePlan(size, threads, False, by_size[size], True)
    if layouts and len(shape) == 3:
        by_layout = _best_rates(encode, {cl: (images(size, cl), threads) for cl in (False, True)})
        if by_layout[True] > by_layout[False] * MARGIN:
            plan = replace(plan, channels_last=True, images_per_s=by_layout[True])
    streams = plan.threads
    if streams > 1:
        small = BATCH_SIZES[0]
        by_streams = _stream_rates(
            encode,
            {
                1: (images(size, plan.channels_last), 1, streams),
                streams: (images(small, plan.channels_last), streams, 1),
            },
        )
        if by_streams[streams] * MARGIN >= by_streams[1]:
            plan = replace(
                plan, batch_size=small, threads=1, streams=streams, images_per_s=by_streams[streams]
            )
    return replace(plan, images_per_s=round(plan.images_per_s, 2))


def image_plan(
    key: str,
    encode: Callable[[torch.Tensor], object],
    shape: tuple[int, ...],
    dtype: torch.dtype,
    probe: bool = True,
    layouts: bool | None = None,
) -> ImagePlan:
    """The cached plan for ``key`` (model id, format and input shape) on this machine; when there is none,
    probed (``probe``) or :data:`DEFAULT_PLAN`. ``dtype``: the tower's input dtype; ``layouts``: whether
    to probe the input layout (None: only for an input dtype other than float32)."""
    if os.environ.get(PROBE_ENV, "1").strip() == "0":
        return DEFAULT_PLAN
    path = probe_file()
    cached = _plan_of(_read_section(path, "plans").get(key))
    if cached is not None:
        return cached
    if not probe:
        return DEFAULT_PLAN
    with reuse_freed_memory():  # as the engine runs the tower
        plan = probe_images(
            encode, shape, dtype, layouts=dtype != torch.float32 if layouts is None else layouts
        )
    _store(path, "plans", key, {k: v for k, v in asdict(plan).items() if k != "probed"})
    return plan
