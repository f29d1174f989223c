"""Large freed allocations are reused inside ``reuse_freed_memory`` and given back to the system after it."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

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


def test_threads_started_after_share_one_arena_reuse_freed_memory_too() -> None:
    """A thread's own arena maps a large allocation afresh whatever the thresholds; after
    ``share_one_arena`` a new thread allocates from the main arena and reuses it (in a fresh process, so
    that the setting stays out of this one)."""
    script = """
import sys, threading
from heap_helpers import faults_of_last_allocation
from core.embed.heap import reuse_freed_memory, share_one_arena

def faults(out):
    with reuse_freed_memory():
        out.append(faults_of_last_allocation())

def in_a_new_thread():
    out = []
    thread = threading.Thread(target=faults, args=(out,))
    thread.start()
    thread.join()
    return out[0]

before = in_a_new_thread()
share_one_arena()
print(before, in_a_new_thread())
"""
    tests = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)])}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    before, after = map(int, out.stdout.split())
    assert before > PAGES // 2, before
    assert after < PAGES // 10, after
