"""Image batches run in concurrent model streams on the CPU.

With every core in one stream, each of the model's ops is split across the cores and they meet at a
barrier after it: ViT-B-32's attention is 384 tiny heads per block, its LayerNorms are short, and oneDNN
splits some of its linear shapes badly (a 1,200-row, 3,072-to-768 bf16 product ran at half the speed of a
1,600-row one on the AMX Xeon). As OpenVINO's throughput hint does, :func:`streamed` instead runs one
stream per core, each a thread on one intra-op thread that decodes its own batch and then runs the model
on it: no op is split, and one stream's decoding overlaps the other's compute. On the AMX Xeon (2 vCPUs,
the host loaded) ViT-B-32 in bf16 ran 150-154 images/s in two streams of 8-16 images against 139 in one
stream of 32 on both cores (model alone, medians of 5 interleaved rounds); end to end on 200 Flickr8k
files, 1.07-1.10x one stream in three runs on the quieter host (the compact model 1.10x;
``decode_threads`` in bench_throughput.json). The probe (:mod:`core.embed.tuning`) picks streams per
machine, model and format, keeping them unless they are slower.

Each thread's ``torch.set_num_threads`` sets its own OpenMP team size (and the default for threads that
start torch later: the caller restores its own on leaving, as :func:`core.embed.engine._intra_op_threads`
does).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")
J = TypeVar("J")
# How many batches per stream may be taken ahead of the consumer (running or finished) before the streams
# pause.
_AHEAD_PER_STREAM = 2
_POLL_S = 0.1


def streamed(
    jobs: Sequence[J], run: Callable[[J], T], streams: int, threads: int
) -> Generator[T, None, None]:
    """``run(job)`` for each of ``jobs`` on ``streams`` threads, each on ``threads`` intra-op threads and in
    inference mode, yielded in the order of ``jobs``. An exception in ``run`` is raised here when its job's
    turn comes; closing the generator stops the streams after the batches they are running."""
    results: dict[int, T] = {}
    errors: dict[int, BaseException] = {}
    ready = threading.Condition()
    slots = threading.Semaphore(_AHEAD_PER_STREAM * streams)
    stop = threading.Event()
    taken = iter(range(len(jobs)))
    take = threading.Lock()

    def work() -> None:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            while not stop.is_set():
                if not slots.acquire(timeout=_POLL_S):
                    continue
                with take:
                    k = next(taken, None)
                if k is None or stop.is_set():
                    return
                try:
                    value = run(jobs[k])
                except BaseException as exc:  # handed to the consumer, which raises it in turn
                    with ready:
                        errors[k] = exc
                        ready.notify_all()
                    return
                with ready:
                    results[k] = value
                    ready.notify_all()

    workers = [
        threading.Thread(target=work, name=f"capsearch-stream-{s}", daemon=True) for s in range(streams)
    ]
    for worker in workers:
        worker.start()
    try:
        for k in range(len(jobs)):
            with ready:
                while k not in results and k not in errors:
                    if not any(worker.is_alive() for worker in workers):
                        raise RuntimeError("the embedding streams stopped before their last batch")
                    ready.wait(_POLL_S)
                if k in errors:
                    raise errors[k]
                value = results.pop(k)
            slots.release()
            yield value
    finally:
        stop.set()
        for worker in workers:
            worker.join()
