"""Search after random sequences of adds, edits, moves, copies and deletes equals a from-scratch build:
identical ids and scores for the exact index (fp32; ties by id, by path in library hits), recall@10 >= 0.99
against exact for HNSW with tombstones. First on the index alone (random vectors, many operations), then on
libraries over tiny generated folders: the updated index equals one built from scratch on the final
catalogue's vectors (bit for bit), and a library built from scratch on the final folder gives the same
paths in the same order, with scores equal up to the embedding's batch-size rounding (<= 1e-6: a photo
embedded in a batch of 3 and in a batch of 32 can differ in the last bit)."""

from __future__ import annotations

import random
import shutil

import faiss
import numpy as np
import pytest
from library_helpers import bump_mtime, key_of, library_of, make_folder, write_photo

from core.index.kind_base import IndexSpec
from core.index.mutable import MutableIndex
from core.library.update import update
from core.search.library_search import LibrarySearcher


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _exact_topk(
    ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    scores, rows = flat.search(query[None], len(ids))
    order = np.lexsort((ids[rows[0]], -scores[0]))[:k]
    return scores[0][order], ids[rows[0]][order]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_index_after_random_adds_and_removes_equals_a_fresh_build(kind, seed):
    rng = np.random.default_rng(seed)
    d = 32
    live: dict[int, np.ndarray] = {}
    index = MutableIndex.empty(d, IndexSpec.parse(kind))
    next_id = 0
    for _ in range(30):
        if live and rng.random() < 0.4:
            gone = rng.choice(sorted(live), size=min(len(live), int(rng.integers(1, 60))), replace=False)
            index.remove(gone)
            for i in gone.tolist():
                del live[i]
        else:
            n = int(rng.integers(1, 80))
            vectors = _unit(rng, n, d)
            if live and rng.random() < 0.3:  # exact duplicates: ties
                vectors[0] = live[next(iter(live))]
            ids = np.arange(next_id, next_id + n)
            next_id += n
            index.add(ids, vectors)
            live.update(zip(ids.tolist(), vectors, strict=True))
    assert sorted(index.live_ids().tolist()) == sorted(live)
    assert all(index.holds(i) is (i in live) for i in range(next_id + 1))  # removed and unknown ids: False
    ids = np.array(sorted(live), np.int64)
    vectors = np.stack([live[i] for i in ids])
    hits = total = 0
    for query in _unit(rng, 30, d):
        want_scores, want_ids = _exact_topk(ids, vectors, query, 10)
        got_scores, got_ids = index.search(query, 10)
        if kind == "exact":
            assert np.array_equal(got_ids, want_ids) and np.array_equal(got_scores, want_scores)
        hits += len(set(got_ids.tolist()) & set(want_ids.tolist()))
        total += len(want_ids)
    assert hits / total >= 0.99


def test_filtered_search_returns_k_when_k_match():
    rng = np.random.default_rng(3)
    vectors = _unit(rng, 1500, 16)
    for kind in ("exact", "hnsw"):
        index = MutableIndex.build(np.arange(1500), vectors, IndexSpec.parse(kind).resolve(1500))
        index.remove(np.arange(0, 1500, 7))
        allowed = np.arange(1, 1500, 5)  # some of them removed
        scores, ids = index.search(vectors[0], 10, allowed)
        assert len(ids) == 10 and all(i % 5 == 1 and i % 7 for i in ids.tolist())
        few = np.array([2, 9, 15])
        assert sorted(index.search(vectors[0], 10, few)[1].tolist()) == [2, 9, 15]


def _mutate(photos, rng: random.Random, counter: list[int]) -> None:
    files = sorted(photos.rglob("*.jpg"))
    op = rng.choice(["add", "edit", "move", "copy", "delete", "touch"])
    if op == "add" or not files:
        counter[0] += 1
        write_photo(photos / f"d{rng.randint(0, 3)}" / f"new{counter[0]}.jpg", 50_000 + counter[0])
        return
    target = rng.choice(files)
    counter[0] += 1
    if op == "edit":
        write_photo(target, 90_000 + counter[0])
        bump_mtime(target, counter[0])
    elif op == "move":
        dest = photos / f"m{rng.randint(0, 2)}" / f"moved{counter[0]}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        target.rename(dest)
    elif op == "copy":
        shutil.copy2(target, photos / f"copy{counter[0]}.jpg")
    elif op == "delete":
        target.unlink()
    else:
        bump_mtime(target, counter[0])


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_library_after_random_changes_equals_one_built_from_scratch(tmp_path, artifacts, tiny_model, seed):
    photos = tmp_path / "photos"
    make_folder(photos, 20, seed=seed)
    lib, _ = library_of("inc", [photos], tiny_model, kind="exact")
    hnsw, _ = library_of("inc-hnsw", [photos], tiny_model, kind="hnsw")
    rng, counter = random.Random(seed), [0]
    for _ in range(6):
        for _ in range(rng.randint(1, 5)):
            _mutate(photos, rng, counter)
        update(lib, tiny_model, key_of(tiny_model))
        update(hnsw, tiny_model, key_of(tiny_model))
    lib.close()
    hnsw.close()
    scratch, _ = library_of("scratch", [photos], tiny_model, kind="exact")
    scratch.close()

    inc, ref, approx = (LibrarySearcher.open(n, device="cpu") for n in ("inc", "scratch", "inc-hnsw"))
    assert inc.size == ref.size == approx.size == len(list(photos.rglob("*.jpg")))
    ids, vectors = inc.index.all_vectors()
    fresh = MutableIndex.build(ids, vectors, IndexSpec.parse("exact"))
    queries = [inc.query_vector(q) for q in ("a dog", "red", "snow + night")]
    queries += [ref.image_vector(p) for p in sorted(photos.rglob("*.jpg"))[:5]]
    found = wanted = 0
    for query in queries:
        for a, b in zip(inc.index.search(query, 10), fresh.search(query, 10), strict=True):
            assert np.array_equal(a, b)
        got = [(h.file.path, h.score) for h in inc.search_vector(query, 10)]
        want = [(h.file.path, h.score) for h in ref.search_vector(query, 10)]
        assert [p for p, _ in got] == [p for p, _ in want]
        assert np.abs(np.array([s for _, s in got]) - [s for _, s in want]).max() <= 1e-6
        approx_paths = {h.file.path for h in approx.search_vector(query, 10)}
        found += len(approx_paths & {p for p, _ in got})
        wanted += len(got)
    assert found / wanted >= 0.99
    for s in (inc, ref, approx):
        s.close()
