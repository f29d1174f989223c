"""FAISS indexes: exact search, HNSW agreement, save/load round trip, mismatch refusal, the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import IndexMismatchError
from core.evaluation.recall import neighbour_recall
from core.index.auto import AUTO_EXACT_MAX
from core.index.graph_kinds import ExactSpec, HNSWSpec
from core.index.kind_base import IndexSpec, IndexSpecError
from core.index.registry import make_spec
from core.index.store import IndexKey, cached_index
from core.index.vector_index import VectorIndex


def _clustered(n: int, d: int = 32, clusters: int = 20, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few centres: structured like real embeddings, easy for HNSW."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, d))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ids(n: int) -> list[str]:
    return [f"v{i}" for i in range(n)]


def test_exact_search_matches_numpy() -> None:
    x = _clustered(300)
    index = VectorIndex.build(x, "exact", _ids(300), "m@random")
    scores, indices = index.search(x[:7], 5)
    sims = x[:7] @ x.T
    assert indices.tolist() == np.argsort(-sims, axis=1, kind="stable")[:, :5].tolist()
    np.testing.assert_allclose(scores, np.sort(sims, axis=1)[:, ::-1][:, :5], atol=1e-5)
    assert index.kind == "exact" and index.count == 300 and index.dim == 32
    _, single = index.search(x[3], 1)  # a 1-D query is one query
    assert single.tolist() == [[3]]
    assert index.search(x[:2], 1000)[1].shape == (2, 300)  # k capped at the count


def test_hnsw_agrees_with_exact_on_easy_data() -> None:
    x = _clustered(2000)
    queries = _clustered(200, seed=1)
    exact = VectorIndex.build(x, ExactSpec(), _ids(2000), "m@random")
    hnsw = VectorIndex.build(x, HNSWSpec(m=16, ef_construction=100, ef_search=64), _ids(2000), "m@random")
    assert hnsw.kind == "hnsw" and hnsw.index.hnsw.efSearch == 64
    approx_scores, approx = hnsw.search(queries, 10)
    _, truth = exact.search(queries, 10)
    assert neighbour_recall(approx, truth, 10) >= 0.95
    assert np.all(np.diff(approx_scores, axis=1) <= 1e-6), "HNSW scores are inner products, best first"


def test_auto_resolves_by_size() -> None:
    assert IndexSpec.parse("auto").resolve(AUTO_EXACT_MAX).kind == "exact"
    assert IndexSpec.parse("auto").resolve(AUTO_EXACT_MAX + 1) == HNSWSpec()
    assert IndexSpec.parse("hnsw").resolve(10).kind == "hnsw"
    with pytest.raises(IndexSpecError, match="unknown index kind 'ivf'"):
        IndexSpec.parse("ivf")
    with pytest.raises(IndexSpecError, match=r"hnsw m must be an integer in \[2, 256\], got 1"):
        HNSWSpec(m=1)


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_save_load_round_trip(tmp_path: Path, kind: str) -> None:
    x = _clustered(500)
    built = VectorIndex.build(
        x,
        make_spec(kind) if kind == "exact" else HNSWSpec(m=8, ef_construction=40, ef_search=32),
        _ids(500),
        "tiny@random",
    )
    built.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert meta["model_id"] == "tiny@random" and meta["kind"] == kind and meta["count"] == 500
    assert meta["dim"] == 32 and meta["ids"] == _ids(500) and meta["build_seconds"] >= 0
    assert meta["params"] == ({} if kind == "exact" else {"m": 8, "ef_construction": 40, "ef_search": 32})

    loaded = VectorIndex.load(tmp_path / "ix", expected_model_id="tiny@random", expected_count=500)
    assert loaded.spec == built.spec and loaded.ids == built.ids
    for a, b in zip(built.search(x[:20], 10), loaded.search(x[:20], 10), strict=True):
        np.testing.assert_array_equal(a, b)


def test_load_refuses_other_model_other_count_and_corruption(tmp_path: Path) -> None:
    x = _clustered(100)
    VectorIndex.build(x, "exact", _ids(100), "tiny@random").save(tmp_path)
    with pytest.raises(IndexMismatchError, match="built with model 'tiny@random', not 'ViT-B-32@openai'"):
        VectorIndex.load(tmp_path, expected_model_id="ViT-B-32@openai")
    with pytest.raises(IndexMismatchError, match="holds 100 vectors but the embeddings have 99"):
        VectorIndex.load(tmp_path, expected_model_id="tiny@random", expected_count=99)
    blob = (tmp_path / "index.faiss").read_bytes()
    (tmp_path / "index.faiss").write_bytes(blob[:-4] + b"\0\0\0\0")
    with pytest.raises(IndexMismatchError, match="does not match its metadata"):
        VectorIndex.load(tmp_path)
    with pytest.raises(IndexMismatchError, match="no saved index"):
        VectorIndex.load(tmp_path / "nowhere")


def test_query_of_another_dimension_is_refused() -> None:
    index = VectorIndex.build(_clustered(50), "exact", _ids(50), "m@random")
    with pytest.raises(IndexMismatchError, match="dimension"):
        index.search(np.ones((1, 8), np.float32), 3)


def test_cache_reuses_and_rebuilds(artifacts: Path) -> None:
    x = _clustered(200)
    key = IndexKey("m@random", "ds", "test", "images")
    first, reused = cached_index(x, _ids(200), key, "exact")
    assert not reused
    assert key.folder(ExactSpec()).is_relative_to(artifacts)
    again, reused = cached_index(x, _ids(200), key, "exact")
    assert reused and again.ids == first.ids
    changed = x.copy()
    changed[0] = changed[1]
    _, reused = cached_index(changed, _ids(200), key, "exact")
    assert not reused, "same model and count but other vectors: stale"
    _, reused = cached_index(x[:150], _ids(150), key, "exact")
    assert not reused
    hnsw, reused = cached_index(x, _ids(200), key, HNSWSpec(ef_search=20))
    assert not reused and hnsw.kind == "hnsw"
    hnsw, reused = cached_index(x, _ids(200), key, HNSWSpec(ef_search=77))
    assert reused and hnsw.index.hnsw.efSearch == 77


def test_each_precision_keeps_its_own_index(artifacts: Path) -> None:
    x = _clustered(200)
    bf16 = x + np.float32(1e-3) * _clustered(200, seed=5)  # what bf16 encoding does to the same gallery
    key = IndexKey("m@random", "ds", "test", "images")
    bf16_key = IndexKey("m@random", "ds", "test", "images", precision="bf16")
    assert not cached_index(x, _ids(200), key, "exact")[1]
    assert not cached_index(bf16, _ids(200), bf16_key, "exact")[1]
    assert cached_index(x, _ids(200), key, "exact")[1], "the bf16 index must not replace the fp32 one"
    assert bf16_key.folder(ExactSpec()).parent.name == "test.bf16"
