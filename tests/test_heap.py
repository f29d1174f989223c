"""Large freed allocations are reused inside ``reuse_freed_memory`` and given back to the system after it."""

from __future__ import annotations

import resource

import pytest
import torch

from core.embed.heap import _glibc, reuse_freed_memory

pytestmark = pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only (this libc is not glibc)")

SIZE = 96 << 20  # above glibc's largest dynamic mmap threshold (32 MiB): mmap'd fresh by default
PAGES = SIZE // 4096


def _faults_of_last_allocation(rounds: int = 10) -> int:
    """Minor page faults while allocating and filling a ``SIZE`` tensor the last of ``rounds`` times (the
    first few leave holes: torch's 64-byte aligned requests do not fit a freed chunk of the same size until
    neighbouring holes coalesce)."""
    for _ in range(rounds - 1):
        torch.empty(SIZE // 4).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(SIZE // 4).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def test_a_freed_large_tensor_is_reused_inside_the_block_and_given_back_after() -> None:
    with reuse_freed_memory():
        inside = _faults_of_last_allocation()
        with reuse_freed_memory():  # a nested block (another engine call) leaves the setting alone
            pass
        nested = _faults_of_last_allocation()
        kept = _resident_bytes()  # the freed tensors' pages are still held for reuse
    given_back = kept - _resident_bytes()
    assert inside < PAGES // 10, inside
    assert nested < PAGES // 10, nested
    assert given_back > SIZE // 2, given_back
