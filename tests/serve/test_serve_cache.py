"""The result and embedding LRUs: hits, keys that include the index version, invalidation on a rebuild."""

from __future__ import annotations

import gc
import os

from core.search.retriever import Retriever
from core.serve.cache import LRU
from core.serve.dataset import ServedDataset, index_files
from core.serve.engine import Engine
from core.serve.metrics import Metrics
from core.serve.settings import Settings


def test_lru_evicts_the_least_recently_used() -> None:
    lru: LRU[int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1
    lru.put("c", 3)
    assert lru.get("b") is None and lru.get("a") == 1 and lru.get("c") == 3
    assert lru.hits == 3 and lru.misses == 1 and lru.hit_rate == 0.75
    off: LRU[int] = LRU(0)
    off.put("a", 1)
    assert off.get("a") is None


def test_results_are_cached_per_query_and_parameters(client, engine) -> None:
    body = {"text": "cache probe: a yellow star", "k": 3}
    first = client.post("/v1/search", json=body).json()
    second = client.post("/v1/search", json=body).json()
    assert first["cached"] is False and second["cached"] is True
    assert second["hits"] == first["hits"] and second["timings"]["encode_ms"] == 0
    other_k = client.post("/v1/search", json={**body, "k": 2}).json()
    assert other_k["cached"] is False and len(other_k["hits"]) == 2
    # the same text through GET shares the embedding (the embedding LRU), not the result list's key
    hits_before = engine.embeddings.hits
    client.post("/v1/search", json={**body, "direction": "captions"})
    assert engine.embeddings.hits == hits_before + 1


def test_a_changed_index_invalidates_the_results(client, engine) -> None:
    body = {"text": "cache probe: two purple circles", "k": 4}
    client.post("/v1/search", json=body)
    assert client.post("/v1/search", json=body).json()["cached"] is True
    original = engine.ready().served
    version = original.version
    # rebuilding the served index (the files are replaced: here, touched) makes the engine reopen it
    assert engine.reload_if_changed() is False
    folder_files = index_files(original.retriever)
    later = max(p.stat().st_mtime_ns for p in folder_files) + 10**9
    for p in folder_files:
        os.utime(p, ns=(later, later))
    assert engine.reload_if_changed() is True and engine.ready().served is not original
    assert engine.ready().worker is not None and engine.ready().served.lm is original.lm
    assert client.post("/v1/search", json=body).json()["cached"] is False  # the LRU was cleared
    # a different index (another kind) is another version: its results never come from the old one's
    r = original.retriever
    engine._swap(ServedDataset(Retriever.open(r.data, r.lm, split=r.split, index="hnsw"), "hnsw"))
    try:
        assert engine.ready().served.version != version
        after = client.post("/v1/search", json=body).json()
        assert after["cached"] is False and after["index"] == "hnsw"
    finally:
        engine._swap(original)
    assert engine.ready().served.version == version


def test_a_server_engine_freezes_the_loaded_heap(synthetic_small, tiny_model) -> None:
    """With ``freeze_heap`` (what ``capsearch serve`` sets) the loaded model and index leave the cyclic
    collector's generations, so its full collections stop pausing requests; without it nothing is frozen."""
    gc.unfreeze()
    for freeze in (False, True):
        settings = Settings(dataset=str(synthetic_small.dir), reload_check_s=0, freeze_heap=freeze)
        engine = Engine(
            settings, Metrics(), ServedDataset.opener(synthetic_small, tiny_model, "test", "auto")
        )
        try:
            engine.load()
            assert (gc.get_freeze_count() > 0) is freeze
        finally:
            engine.close()
            gc.unfreeze()
