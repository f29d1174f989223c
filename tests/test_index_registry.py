"""The index registry on 20,000 clustered vectors: every kind builds, saves, loads memory-mapped and
searches above a recall floor; auto's choice and knob tuning; add/remove; shard builds; clear errors."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from core.index.auto import AutoSpec, choose
from core.index.graph_kinds import ExactSpec, HNSWSpec
from core.index.ivf_kinds import IVFFlatSpec
from core.index.kind_base import IndexSpec, IndexSpecError
from core.index.mutable import MutableIndex
from core.index.registry import CHOICES, KINDS, make_spec
from core.index.sources import ShardSource
from core.index.vector_index import VectorIndex, neighbour_recall

N, D = 20_000, 32


def _clustered(n: int, seed: int, d: int = D, clusters: int = 100) -> np.ndarray:
    """Unit vectors around fixed centres (the same for every seed); ``seed`` draws the points."""
    centres = np.random.default_rng(0).standard_normal((clusters, d))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gallery, queries, exact top-10 of the queries)."""
    x, q = _clustered(N, 1), _clustered(300, 2)
    truth = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    return x, q, truth


def _ids(n: int) -> list[str]:
    return [str(i) for i in range(n)]


# kind -> (spec, recall@10 floor against exact at that spec's knob)
CASES = {
    "exact": (ExactSpec(), 1.0),
    "hnsw": (HNSWSpec(m=16, ef_construction=40, ef_search=64), 0.95),
    "hnsw-sq": (make_spec("hnsw-sq", m=16, ef_construction=40, ef_search=64), 0.85),
    "ivf-flat": (IVFFlatSpec(nprobe=16), 0.95),
    "ivf-pq": (make_spec("ivf-pq", pq_m=16, nprobe=16), 0.6),
}


def test_every_registered_kind_has_a_case() -> None:
    assert set(KINDS) == set(CASES) and CHOICES[0] == "auto"


@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=pytest.mark.slow) if k == "ivf-pq" else k for k in CASES]
)
def test_kind_builds_saves_loads_mmapped_and_searches(tmp_path: Path, data, kind: str) -> None:
    x, q, truth = data
    spec, floor = CASES[kind]
    built = VectorIndex.build(x, spec, _ids(N), "m@t", seed=3)
    assert built.kind == kind and built.count == N
    recall = neighbour_recall(built.search(q, 10)[1], truth)
    assert recall >= floor, f"{kind} recall@10 {recall:.3f} under {floor}"
    built.save(tmp_path)
    loaded = VectorIndex.load(tmp_path, expected_model_id="m@t", expected_count=N, mmap=True)
    assert loaded.spec == built.spec
    for a, b in zip(built.search(q[:50], 10), loaded.search(q[:50], 10), strict=True):
        np.testing.assert_array_equal(a, b)


def test_auto_picks_by_count_and_budget() -> None:
    big = 2**40
    assert choose(1_000, 512, big)[0].kind == "exact"
    assert choose(100_000, 512, big)[0].kind == "hnsw"
    assert choose(100_000, 512, int(100_000 * 512 * 1.5))[0].kind == "hnsw-sq"  # floats do not fit
    assert choose(5_000_000, 512, big)[0].kind == "ivf-flat"  # past the graph limit
    pq, _ = choose(5_000_000, 512, 5_000_000 * 100)
    assert pq.kind == "ivf-pq" and pq.params()["pq_m"] <= 64
    with pytest.raises(IndexSpecError, match="no index kind fits"):
        choose(5_000_000, 512, 1_000_000)
    with pytest.raises(IndexSpecError, match="no index kind fits 150 vectors"):
        choose(150, 64, 1_000)  # few vectors: few lists, the hint must still be computable


def test_auto_tunes_nprobe_to_the_target_on_fresh_queries(data) -> None:
    x, q, truth = data
    budget = int(IVFFlatSpec(nlist=565).memory_bytes(N, D) * 1.02)  # too small for a graph, enough for IVF
    auto = AutoSpec(max_memory=budget, target_recall=0.9)
    index = VectorIndex.build(x, auto, _ids(N), "m@t", queries=_clustered(400, 7))
    record = index.meta["auto"]
    assert (
        record["chosen"] == "ivf-flat" and record["knob"] == "nprobe" and "IVF-Flat fits" in record["reason"]
    )
    knobs = [t["knob"] for t in record["tradeoff"]]
    assert knobs == sorted(knobs) and record["value"] in knobs
    fresh = neighbour_recall(index.search(q, 10)[1], truth)
    assert fresh >= 0.9 - 0.01, f"tuned nprobe={record['value']} gives {fresh:.3f} on fresh queries"
    if record["value"] > 1:  # and bisection found the smallest such knob
        below = [t for t in record["tradeoff"] if t["knob"] == record["value"] - 1]
        assert below and below[0]["recall"] < 0.9


def _search_all(index: MutableIndex, q: np.ndarray) -> list[tuple[list[int], list[float]]]:
    out = []
    for v in q:
        scores, ids = index.search(v, 10)
        out.append((ids.tolist(), np.round(scores, 5).tolist()))
    return out


@pytest.mark.parametrize("kind", ["exact", "ivf-flat"])
def test_add_remove_equals_a_build_from_scratch(data, kind: str) -> None:
    x, q, _ = data
    spec = make_spec(kind).resolve(N, D)
    ids = np.arange(N, dtype=np.int64) * 3  # caller ids, not row numbers
    gone, extra = ids[::7], _clustered(500, 9)
    extra_ids = np.arange(500, dtype=np.int64) * 3 + 1
    updated = MutableIndex.empty(D, spec)
    updated.index.train(x)  # the same training for both (IVF), so the lists are comparable
    updated.add(ids, x)
    updated.remove(gone)
    updated.add(extra_ids, extra)
    keep = ~np.isin(ids, gone)
    fresh = MutableIndex.empty(D, spec)
    fresh.index.train(x)
    fresh.add(np.concatenate([ids[keep], extra_ids]), np.vstack([x[keep], extra]))
    assert updated.count == fresh.count == keep.sum() + 500
    assert not updated.holds(int(gone[0])) and updated.holds(int(extra_ids[0]))
    assert _search_all(updated, q[:60]) == _search_all(fresh, q[:60])


@pytest.mark.parametrize("kind", ["hnsw", "hnsw-sq"])
def test_hnsw_tombstones_keep_recall(data, kind: str) -> None:
    x, q, _ = data
    n = 8_000
    index = MutableIndex.build(np.arange(n), x[:n], make_spec(kind, m=16, ef_construction=40, ef_search=64))
    gone = np.arange(0, n, 10)
    index.remove(gone)
    assert index.tombstones and not index.holds(0)
    live = np.setdiff1d(np.arange(n), gone)
    truth = live[np.argsort(-(q @ x[live].T), axis=1, kind="stable")[:, :10]]
    found = np.array([index.search(v, 10)[1] for v in q])
    assert neighbour_recall(found, truth) >= (0.99 if kind == "hnsw" else 0.9)  # 8-bit codes cost recall
    index.remove(np.arange(1, n, 3))  # past 20% tombstones: the graph is rebuilt from the live vectors
    assert not index.tombstones and index.count == len(np.setdiff1d(live, np.arange(1, n, 3)))


def test_build_from_shards_reads_one_shard_at_a_time(tmp_path: Path) -> None:
    x, q = _clustered(N, 1, d=256), _clustered(50, 2, d=256)  # 20 MB of vectors, in ten shards
    for k in range(10):
        np.save(tmp_path / f"shard-{k:02d}.npy", x[k * 2000 : (k + 1) * 2000])
    source = ShardSource.of_folder(tmp_path)
    assert (source.count, source.dim) == (N, 256)
    tracemalloc.start()
    index = VectorIndex.build(source, IVFFlatSpec(nlist=64, nprobe=64), _ids(N), "m@t", seed=5)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < x.nbytes / 3, f"peak {peak} bytes of Python-side arrays for {x.nbytes} bytes of vectors"
    # rows read: the training sample (64 per list) + each vector once to add + once to checksum
    assert source.rows_read == 64 * 64 + 2 * N
    whole = VectorIndex.build(x, IVFFlatSpec(nlist=64, nprobe=64), _ids(N), "m@t", seed=5)
    assert whole.meta["vectors_sha256"] == index.meta["vectors_sha256"]
    np.testing.assert_array_equal(whole.search(q, 10)[1], index.search(q, 10)[1])


def test_bad_kinds_and_knobs_are_clear_errors() -> None:
    with pytest.raises(IndexSpecError, match="unknown index kind 'ivf'") as err:
        IndexSpec.parse("ivf")
    assert "ivf-pq" in (err.value.hint or "")
    with pytest.raises(IndexSpecError, match="hnsw has no parameter 'nprobe'"):
        make_spec("hnsw", nprobe=4)
    with pytest.raises(IndexSpecError, match=r"ivf-flat nprobe must be an integer in \[1, "):
        make_spec("ivf-flat", nprobe=0)
    with pytest.raises(IndexSpecError, match="nprobe 99 exceeds nlist 10"):
        make_spec("ivf-flat", nlist=10, nprobe=99)
    with pytest.raises(IndexSpecError, match="pq_m 7 does not divide the dimension 32"):
        make_spec("ivf-pq", nlist=4, nprobe=4, pq_m=7).make(32)
    with pytest.raises(IndexSpecError, match="target recall"):
        AutoSpec(target_recall=1.5)


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(
    not Path("/proc/self/statm").exists(), reason="needs /proc (Linux) to read resident memory"
)
def test_a_saved_index_opens_memory_mapped(tmp_path: Path) -> None:
    x = _clustered(N, 1, d=512)  # 40 MB of vectors
    VectorIndex.build(x, "exact", _ids(N), "m@t").save(tmp_path)
    del x
    before = _rss_mib()
    index = VectorIndex.load(tmp_path, mmap=True)
    assert _rss_mib() - before < 15, "the vectors stay in the page cache, not copied into the process"
    assert index.count == N


def test_build_from_embedding_cache_chunks(tmp_path: Path, data) -> None:
    from core.embed.chunks import chunk_file, save_keyed_chunk

    x, q, _ = data
    n = 8_000
    for k in range(4):
        rows = x[k * 2000 : (k + 1) * 2000]
        save_keyed_chunk(chunk_file(tmp_path, k), [str(i) for i in range(len(rows))], rows)
    source = ShardSource.of_folder(tmp_path)
    assert (source.count, source.dim) == (n, D)
    index = VectorIndex.build(source, "exact", _ids(n), "m@t")
    truth = np.argsort(-(q @ x[:n].T), axis=1, kind="stable")[:, :10]
    assert neighbour_recall(index.search(q, 10)[1], truth) == 1.0
    assert source.rows_read == 2 * n  # added once, checksummed once
