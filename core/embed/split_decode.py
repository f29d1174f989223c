"""Image batches decoded with each batch split across threads.

Pillow releases the GIL while it decodes and resizes, so the images of one batch decode on several threads
at once: on a 2-vCPU AMD EPYC (Zen 5), 4032x3024 photos (decoded in ``draft``) went 1.7-2.0x faster on two
threads than on one, small JPEGs 1.2-1.6x (more of their time is Python, under the GIL). The engine keeps
its decoding threads from outnumbering the cores beside the model's (:mod:`core.embed.engine`): a model on
every core gets each batch decoded between its calls, split across as many pool threads as it uses (the
model's thread waits: with it decoding a share itself, the pretrained-tower lit model ran small JPEGs 15%
slower than with one background decode thread). Against one background decode thread beside the model,
the engine's way before (``scripts/bench_throughput.py``, ``decode_threads``, same machine), such photos
ran 1.69x faster end to end with the compact model, 1.23x with lit-lite2 and 1.07-1.20x with ViT-B-32 in
bf16; small Flickr8k JPEGs came level (0.92-1.07x).

No torch op runs in these threads: the items are collated in the model's thread (:func:`collated`).
A torch op in another thread starts that thread's own OpenMP team, whose threads spin beside the model's
after each op.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Protocol

import torch

Item = tuple[int, torch.Tensor, str]
Batch = tuple[torch.Tensor, torch.Tensor, list[str]]


class ItemSource(Protocol):
    """What the engine's image dataset offers: a length and (index, uint8 or float image, failure)."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Item: ...


def _items(source: ItemSource, rows: Sequence[int]) -> list[Item]:
    return [source[i] for i in rows]


def decoded(source: ItemSource, rows: range, pool: Executor | None, parts: int) -> list[Item]:
    """``rows`` of ``source`` in order: in this thread (``pool`` None) or as ``parts`` contiguous runs on
    ``pool``, this thread waiting."""
    if pool is None:
        return _items(source, rows)
    bounds = [len(rows) * k // parts for k in range(parts + 1)]
    runs = [pool.submit(_items, source, rows[bounds[k] : bounds[k + 1]]) for k in range(parts)]
    return [item for run in runs for item in run.result()]


def batch_rows(count: int, batch_size: int, streams: int = 1) -> list[range]:
    """The rows of ``count`` items in order, in batches of at most ``batch_size``. One stream: full batches
    and the rest. Several: a multiple of ``streams`` batches of even sizes, so that the streams' last round
    leaves no core idle while one of them finishes a batch alone."""
    if streams == 1 or count == 0:
        return [range(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]
    batches = min(count, -(-count // (batch_size * streams)) * streams)
    bounds = [count * k // batches for k in range(batches + 1)]
    return [range(bounds[k], bounds[k + 1]) for k in range(batches)]


def split_batches(source: ItemSource, batch_size: int, threads: int) -> Generator[list[Item], None, None]:
    """The items of ``source`` batch by batch, in order, each batch split across ``threads`` pool threads
    (one or none: decoded in this thread)."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="capsearch-decode") if threads > 1 else None
    try:
        for rows in batch_rows(len(source), batch_size):
            yield decoded(source, rows, pool, threads)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def collated(items: list[Item]) -> Batch:
    """A batch's items as the engine's DataLoader collates them: indices, stacked images, failures."""
    return (
        torch.tensor([i for i, _, _ in items]),
        torch.stack([image for _, image, _ in items]),
        [reason for _, _, reason in items],
    )
