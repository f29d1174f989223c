"""Image batches decoded ahead, each split across threads (core.embed.split_decode)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch.utils.data import DataLoader

from core.embed.split_decode import Batch, Item, batch_rows, collated, decoded, split_batches


class Source:
    """Items with a failure at every fifth index; records the thread that decoded each one."""

    def __init__(self, n: int, seconds: float = 0.0) -> None:
        self.n, self.seconds = n, seconds
        self.threads: dict[int, str] = {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Item:
        self.threads[i] = threading.current_thread().name
        if self.seconds:
            time.sleep(self.seconds)  # releases the GIL, as Pillow's decoding does
        reason = "broken" if i % 5 == 3 else ""
        return i, torch.full((3, 2, 2), i % 256, dtype=torch.uint8), reason


def _same(a: Batch, b: Batch) -> bool:
    return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and list(a[2]) == list(b[2])


def _helped(source: Source) -> set[int]:
    return {i for i, name in source.threads.items() if name.startswith("capsearch-decode")}


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_a_batch_splits_into_runs_on_the_pool_and_collates_as_the_dataloader_does(parts: int) -> None:
    source = Source(7)
    with ThreadPoolExecutor(parts, thread_name_prefix="capsearch-decode") as pool:
        got = collated(decoded(source, range(7), pool, parts))
    assert _helped(source) == set(range(7))
    assert _same(got, next(iter(DataLoader(source, batch_size=7))))


@pytest.mark.parametrize("threads", [0, 1, 2, 3])
def test_every_batch_comes_in_order(threads: int) -> None:
    source = Source(23)
    got = [collated(items) for items in split_batches(source, 4, threads)]
    assert bool(_helped(source)) == (threads > 1)  # one thread: this one
    expected = list(DataLoader(source, batch_size=4))
    assert len(got) == len(expected) == 6 and all(_same(a, b) for a, b in zip(got, expected, strict=True))


def test_a_split_batch_decodes_in_parallel() -> None:
    source = Source(16, seconds=0.02)  # sleeps release the GIL: one batch of 16 takes 320 ms on one thread
    started = time.perf_counter()
    assert len(next(split_batches(source, 16, 4))) == 16
    assert time.perf_counter() - started < 0.25  # 80 ms on four threads, far below one thread's 320


def test_closing_early_stops_the_helpers() -> None:
    batches = split_batches(Source(40), 4, 2)
    next(batches)
    batches.close()
    assert not any(t.name.startswith("capsearch-decode") and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize(
    ("count", "batch_size", "streams", "sizes"),
    [
        (10, 4, 1, [4, 4, 2]),
        (200, 16, 2, [14, 14, 14, 15, 14, 14, 15, 14, 14, 14, 15, 14, 14, 15]),
        (33, 16, 2, [8, 8, 8, 9]),
        (20, 16, 2, [10, 10]),
        (1, 16, 2, [1]),
        (0, 16, 2, []),
    ],
)
def test_batches_are_even_across_streams(count: int, batch_size: int, streams: int, sizes: list[int]) -> None:
    rows = batch_rows(count, batch_size, streams)
    assert [len(r) for r in rows] == sizes
    assert [i for r in rows for i in r] == list(range(count))
