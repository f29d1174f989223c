"""Freed heap memory kept for reuse while bulk encoding or training runs (glibc's malloc only; else a no-op).

glibc serves an allocation above ``M_MMAP_THRESHOLD`` (adjusted on the fly, at most 32 MiB on 64-bit) with
fresh pages from ``mmap`` and unmaps them on free. An eager forward pass allocates and frees its large
activations on every batch, so each batch faulted them in again page by page: on a 2-vCPU AMD EPYC (AVX2)
VM, allocating and filling a 77 MB tensor took 35 ms that way against 5.5 ms on reused pages, and the
fp32fast lit-lite2 image tower (EfficientNet-Lite2, batch 16, activations up to 77 MB) ran 26.6-29.1
images/s against 38.3-38.8 with the thresholds below. ViT-B-32 did not change: its largest activation
(20 MB at batch 32) is under the threshold already. Runtimes such as OpenVINO keep their own memory arena
for the same reason.

Training allocates and frees far more per step (activations, their gradients, the optimizer's temporaries),
so the trainer (:mod:`core.train.trainer`) keeps freed memory for its whole run as well: on a 2-vCPU AMD
EPYC (Zen 5) the compact model's Flickr8k recipe (batch 128, flips off) went from 0.77 to 1.32 steps/s and
the demo model's from 4.34 to 4.77 (median of 4 interleaved runs, artifacts/results/compare_training_*.json).

Each thread's first allocation ties it to an arena, and glibc gives new threads arenas of their own (up to
8 per core) whose heaps hold at most 64 MiB: a larger allocation there is always mmap'd, whatever the
thresholds. So in a thread (a TUI worker, a service thread) the setting above did nothing for the large
activations: lit-lite2's exact fp32 engine ran 22.9 images/s in a new thread against 45.5 in the main thread
of the same process (Zen 5 EPYC, medians of 5, scripts/bench_thread_heap.py). :func:`share_one_arena`,
called by the app and the service before they start their threads, caps glibc at one arena, so threads
started afterwards are handed an existing arena, the main one unless another thread made its own before:
a new thread then ran 48.7 against 49.8. glibc's placement of repeated large blocks is not regular
enough to count a thread's page faults reliably, so the benchmark, not a test, carries that figure.

:func:`reuse_freed_memory` raises both thresholds for the duration of a block (nested and concurrent
blocks share one setting); on leaving the last block the thresholds go to glibc's 64-bit defaults' upper
values (an explicit value turns glibc's own adjustment off) and the freed memory is returned to the system.
"""

from __future__ import annotations

import ctypes
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# While encoding: serve every allocation below 1 GiB from the heap and keep up to 1 GiB of free heap top.
BULK_BYTES = 1 << 30
# Afterwards: the values glibc's dynamic adjustment tends to on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX, twice it).
MMAP_AFTER = 32 << 20
TRIM_AFTER = 64 << 20

_lock = threading.Lock()
_depth = 0


@cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError):
        return None
    return libc


def _set(libc: ctypes.CDLL, mmap: int, trim: int) -> None:
    libc.mallopt(M_MMAP_THRESHOLD, mmap)
    libc.mallopt(M_TRIM_THRESHOLD, trim)


def share_one_arena() -> None:
    """Cap glibc at one arena: threads that allocate for the first time from now on share an existing one
    (see above)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, 1)


@contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """Inside the block, large freed allocations stay in the heap for the next batch (see above)."""
    global _depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            _set(libc, BULK_BYTES, BULK_BYTES)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _set(libc, MMAP_AFTER, TRIM_AFTER)
                libc.malloc_trim(0)
