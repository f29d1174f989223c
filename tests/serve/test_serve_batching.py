"""Concurrent text queries are encoded together (batch-size metric) and give the single-query vectors."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from core.embed.engine import encode_text_queries, encode_text_query
from core.serve.batcher import ModelThread
from core.serve.metrics import Metrics

TEXTS = [
    f"{n} red circles and a blue square on the {side}" for n in range(1, 9) for side in ("left", "right")
]


def _batch_sizes(metrics: Metrics) -> tuple[float, float]:
    """(number of forward passes, queries encoded) from the batch-size histogram."""
    count = metrics.registry.get_sample_value("capsearch_encode_batch_size_count") or 0.0
    total = metrics.registry.get_sample_value("capsearch_encode_batch_size_sum") or 0.0
    return count, total


def test_a_batch_equals_single_encoding(tiny_model) -> None:
    batch = encode_text_queries(tiny_model, TEXTS + ["a dog"])
    single = np.stack([encode_text_query(tiny_model, t) for t in TEXTS + ["a dog"]])
    assert np.abs(batch - single).max() < 1e-5


def test_concurrent_queries_are_batched(tiny_model) -> None:
    metrics = Metrics()
    worker = ModelThread(
        lambda texts: encode_text_queries(tiny_model, texts), metrics, window_s=0.05, max_batch=32
    )
    start = threading.Barrier(len(TEXTS))

    def query(text: str) -> np.ndarray:
        with worker.enter():
            start.wait()
            return worker.encode_text(text).result(timeout=30)

    try:
        with ThreadPoolExecutor(len(TEXTS)) as pool:
            vectors = list(pool.map(query, TEXTS))
    finally:
        worker.close()
    passes, encoded = _batch_sizes(metrics)
    assert encoded == len(TEXTS) and passes < len(TEXTS) / 2, f"{passes} forward passes for {encoded} queries"
    single = np.stack([encode_text_query(tiny_model, t) for t in TEXTS])
    assert np.abs(np.stack(vectors) - single).max() < 1e-5


def test_a_lone_query_does_not_wait_for_the_window(tiny_model) -> None:
    import time

    metrics = Metrics()
    worker = ModelThread(lambda texts: encode_text_queries(tiny_model, texts), metrics, window_s=1.0)
    try:
        with worker.enter():
            t0 = time.perf_counter()
            worker.encode_text("a dog").result(timeout=30)
            assert time.perf_counter() - t0 < 0.5
        failing = worker.encode_text("   ")  # an error reaches the caller, and the thread lives on
        try:
            failing.result(timeout=30)
            raise AssertionError("an empty query must fail")
        except Exception as exc:  # the CapsearchError of the engine
            assert "empty" in str(exc)
        assert worker.call(lambda: 41 + 1).result(timeout=30) == 42
    finally:
        worker.close()


def test_concurrent_http_searches_match_the_retriever(make_client, engine) -> None:
    """Through the app, every concurrent query goes through the batcher once and gets its own hits (that
    real concurrent HTTP requests share forward passes is shown against uvicorn in test_serve_process)."""
    client = make_client()
    texts = [f"concurrent probe {i} with a green triangle" for i in range(12)]
    before = _batch_sizes(engine.metrics)
    with ThreadPoolExecutor(12) as pool:
        bodies = list(pool.map(lambda t: client.post("/v1/search", json={"text": t, "k": 3}).json(), texts))
    encoded = _batch_sizes(engine.metrics)[1] - before[1]
    assert encoded == len(texts)
    for text, body in zip(texts, bodies, strict=True):
        hits = engine.ready().served.retriever.search_text(text, 3)
        assert [h["id"] for h in body["hits"]] == [h.record.id for h in hits]
        assert np.allclose([h["score"] for h in body["hits"]], [h.score for h in hits], atol=1e-5)


def test_a_bad_text_in_a_batch_fails_only_its_own_request(tiny_model) -> None:
    metrics = Metrics()
    worker = ModelThread(lambda texts: encode_text_queries(tiny_model, texts), metrics, window_s=0.2)
    texts = ["a red circle", "  ", "a blue square"]
    start = threading.Barrier(len(texts))

    def query(text: str) -> object:
        with worker.enter():
            start.wait()
            try:
                return worker.encode_text(text).result(timeout=30)
            except Exception as exc:  # the empty query's CapsearchError
                return exc

    try:
        with ThreadPoolExecutor(len(texts)) as pool:
            good, bad, other = pool.map(query, texts)
    finally:
        worker.close()
    assert isinstance(bad, Exception) and "empty" in str(bad)
    assert np.abs(good - encode_text_query(tiny_model, texts[0])).max() < 1e-5
    assert np.abs(other - encode_text_query(tiny_model, texts[2])).max() < 1e-5
