"""Counting the page faults of a large allocation, to tell whether freed memory is reused."""

from __future__ import annotations

import resource

import torch

SIZE = 96 << 20  # above glibc's largest dynamic mmap threshold (32 MiB): mmap'd fresh by default
PAGES = SIZE // 4096


def faults_of_last_allocation(rounds: int = 10) -> int:
    """Minor page faults while allocating and filling a ``SIZE`` tensor the last of ``rounds`` times (the
    first few leave holes: torch's 64-byte aligned requests do not fit a freed chunk of the same size until
    neighbouring holes coalesce)."""
    for _ in range(rounds - 1):
        torch.empty(SIZE // 4).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(SIZE // 4).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
