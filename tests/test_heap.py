"""Large freed allocations are reused inside ``reuse_freed_memory`` and given back to the system after it."""

from __future__ import annotations

import resource

import pytest
from heap_helpers import PAGES, SIZE, faults_of_last_allocation

from core.embed.heap import _glibc, reuse_freed_memory

pytestmark = pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only (this libc is not glibc)")


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def test_a_freed_large_tensor_is_reused_inside_the_block_and_given_back_after() -> None:
    with reuse_freed_memory():
        inside = faults_of_last_allocation()
        with reuse_freed_memory():  # a nested block (another engine call) leaves the setting alone
            pass
        nested = faults_of_last_allocation()
        kept = _resident_bytes()  # the freed tensors' pages are still held for reuse
    given_back = kept - _resident_bytes()
    assert inside < PAGES // 10, inside
    assert nested < PAGES // 10, nested
    assert given_back > SIZE // 2, given_back
