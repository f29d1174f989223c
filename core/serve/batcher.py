"""The model thread: every forward pass of the service runs here, text queries in micro-batches.

What is serialised and why: forward passes. One CPU forward already spreads over every core through
torch's intra-op threads, so two at once only compete for the same cores (and thrash caches); one thread
running them back to back is as fast and keeps latency predictable. What batching adds: concurrent text
queries wait up to ``window_s`` (only while more requests are on their way, see :meth:`ModelThread.enter`)
and are encoded together in one forward of at most ``max_batch`` rows, which costs little more than one
query. Index searches are not serialised: FAISS reads are thread-safe and run in the request threads.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from core.serve.errors import NotReady
from core.serve.metrics import Metrics

BatchEncoder = Callable[[list[str]], np.ndarray]


@dataclass
class _TextJob:
    text: str
    future: Future[np.ndarray] = field(default_factory=Future)


@dataclass
class _CallJob:
    fn: Callable[[], Any]
    future: Future[Any] = field(default_factory=Future)


_STOP = object()


class ModelThread:
    """Runs jobs on one thread; text jobs are collected into batches (see the module docstring)."""

    def __init__(self, encode: BatchEncoder, metrics: Metrics, window_s: float = 0.003, max_batch: int = 32):
        self.encode = encode
        self.metrics = metrics
        self.window_s = window_s
        self.max_batch = max_batch
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._active = 0
        self._active_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="capsearch-model", daemon=True)
        self._thread.start()

    @contextmanager
    def enter(self) -> Iterator[None]:
        """Mark a request that may soon submit a text query: the batcher waits for it only while the
        queries collected so far are fewer than such requests (so a lone query never waits)."""
        with self._active_lock:
            self._active += 1
        try:
            yield
        finally:
            with self._active_lock:
                self._active -= 1

    def encode_text(self, text: str) -> Future[np.ndarray]:
        job = _TextJob(text)
        self._put(job)
        return job.future

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` (an image encode) on the model thread."""
        job = _CallJob(fn)
        self._put(job)
        return job.future

    def _put(self, job: Any) -> None:
        if self._closed:
            raise NotReady("the service is stopping", hint="retry against a running instance")
        self._jobs.put(job)
        self.metrics.queue_depth.set(self._jobs.qsize())

    def close(self) -> None:
        self._closed = True
        self._jobs.put(_STOP)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        pending: list[Any] = []
        while True:
            job = pending.pop(0) if pending else self._jobs.get()
            if job is _STOP:
                return
            if isinstance(job, _CallJob):
                _settle(job.future, job.fn)
            else:
                batch, deferred = self._collect(job)
                pending.extend(deferred)
                self._encode_batch(batch)
            self.metrics.queue_depth.set(self._jobs.qsize())

    def _collect(self, first: _TextJob) -> tuple[list[_TextJob], list[Any]]:
        """``first`` and the text jobs that arrive within the window; other jobs are deferred."""
        batch, deferred = [first], []
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or len(batch) >= self._active:
                    break
                try:
                    job = self._jobs.get(timeout=min(remaining, 0.0005))
                except queue.Empty:
                    continue
            if isinstance(job, _TextJob):
                batch.append(job)
            else:
                deferred.append(job)
                if job is _STOP:
                    break
        return batch, deferred

    def _encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    def _encode_batch(self, batch: list[_TextJob]) -> None:
        texts = list(dict.fromkeys(job.text for job in batch))  # the same query twice is encoded once
        start = time.perf_counter()
        try:
            vectors = self.encode(texts)
        except Exception as exc:
            if len(texts) > 1:  # one bad text must not fail the others: encode them one by one
                for job in batch:
                    _settle(job.future, partial(self._encode_one, job.text))
                return
            for job in batch:
                job.future.set_exception(exc)
            return
        self.metrics.encode.labels("text").observe(time.perf_counter() - start)
        self.metrics.batch_size.observe(len(texts))
        row = {text: i for i, text in enumerate(texts)}
        for job in batch:
            job.future.set_result(vectors[row[job.text]])


def _settle(future: Future[Any], fn: Callable[[], Any]) -> None:
    try:
        future.set_result(fn())
    except BaseException as exc:  # handed to the request that asked
        future.set_exception(exc)
