"""Concurrent model streams (core.embed.streams) and the engine and probe that use them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from recorder import Recorder

from core.embed import engine, tuning
from core.embed.engine import encode_images
from core.embed.streams import streamed
from core.embed.tuning import ImagePlan
from core.models.loading import LoadedModel, load_model


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("capsearch-stream")]


def test_streams_yield_in_order_each_job_once_on_their_own_threads() -> None:
    seen: list[tuple[int, str, int]] = []
    before = torch.get_num_threads()

    def run(job: int) -> int:
        time.sleep(0.02 if job % 3 == 0 else 0.001)  # later jobs often finish first
        seen.append((job, threading.current_thread().name, torch.get_num_threads()))
        return job * 10

    assert list(streamed(list(range(12)), run, streams=2, threads=1)) == [j * 10 for j in range(12)]
    assert sorted(job for job, _, _ in seen) == list(range(12))
    assert {name for _, name, _ in seen} == {"capsearch-stream-0", "capsearch-stream-1"}
    assert {threads for _, _, threads in seen} == {1}
    assert torch.get_num_threads() == before and not _stream_threads()


def test_streams_run_at_once() -> None:
    both = threading.Barrier(2, timeout=10)  # broken (an error) if the two jobs ran one after the other
    assert list(streamed([0, 1], lambda job: both.wait() >= 0, streams=2, threads=1)) == [True, True]


def test_an_error_is_raised_in_its_turn() -> None:
    def run(job: int) -> int:
        if job == 3:
            raise ValueError("job 3 failed")
        return job

    got: list[int] = []
    with pytest.raises(ValueError, match="job 3 failed"):
        for value in streamed(list(range(8)), run, streams=2, threads=1):
            got.append(value)
    assert got == [0, 1, 2] and not _stream_threads()


def test_closing_stops_the_streams_after_their_batches() -> None:
    ran: list[int] = []

    def run(job: int) -> int:
        time.sleep(0.01)
        ran.append(job)
        return job

    batches = streamed(list(range(200)), run, streams=2, threads=1)
    assert [next(batches) for _ in range(3)] == [0, 1, 2]
    batches.close()
    assert not _stream_threads()
    assert len(ran) <= 3 + 2 * 2 + 2  # taken: the yielded, the finished ones waiting, one in each stream


@pytest.fixture(scope="module")
def tiny32() -> LoadedModel:
    return load_model("capsearch-tiny", device="cpu", precision="fp32")


def test_engine_streams_give_the_single_stream_result(
    tiny32: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(9):
        path = tmp_path / f"photo{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    paths.insert(5, tmp_path / "missing.png")
    results = []
    for streams, on in ((1, True), (2, True), (2, False)):
        plan = ImagePlan(batch_size=3, threads=1, channels_last=False, streams=streams)
        monkeypatch.setattr(engine, "engine_plan", lambda lm, probe=True, plan=plan: plan)
        monkeypatch.setattr(engine, "STREAMS", on)
        reporter = Recorder()
        results.append((*encode_images(tiny32, paths, reporter=reporter), reporter))
    (single, failed, _), (streamed_, streamed_failed, reporter), (off, off_failed, off_reporter) = results
    # batches of other sizes: the same vectors to float rounding
    assert np.abs(streamed_ - single).max() < 1e-6 and single[[0, 9]].any() and not single[5].any()
    assert streamed_failed == off_failed == failed == [(5, failed[0][1])]
    # two streams: four batches of at most 3, sized evenly, rather than 3, 3, 3 and 1
    assert [done for stage, done, _ in reporter.updates if stage == "embed images"] == [2, 5, 7, 10]
    assert sum("skipped image" in line for line in reporter.logs) == 1
    # streams off: one stream on both streams' threads, with both streams' images in a batch
    assert [done for stage, done, _ in off_reporter.updates if stage == "embed images"] == [6, 10]
    assert np.abs(off - single).max() < 1e-5


@pytest.mark.parametrize(("shared_lock", "streams"), [(False, 2), (True, 1)])
def test_the_probe_keeps_streams_unless_they_are_slower(
    shared_lock: bool, streams: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 5 ms a call and 0.5 ms an image whatever the threads: streams overlap unless every call holds one lock,
    # and then their smaller batches pay the 5 ms more often
    lock = threading.Lock() if shared_lock else None

    def encode(x: torch.Tensor) -> torch.Tensor:
        if lock is None:
            time.sleep(0.005 + x.shape[0] * 0.0005)
        else:
            with lock:
                time.sleep(0.005 + x.shape[0] * 0.0005)
        return x.flatten(1).sum(1)

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        plan = tuning.probe_images(encode, (3, 8, 8), torch.float32, layouts=False)
    finally:
        torch.set_num_threads(previous)
    assert plan.streams == streams
    if streams > 1:
        assert (plan.threads, plan.batch_size) == (1, tuning.BATCH_SIZES[0]) and plan.images_per_s > 2000
    else:
        assert (plan.threads, plan.batch_size) == (2, 64)
