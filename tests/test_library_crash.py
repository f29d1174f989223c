"""SIGKILL during `capsearch library add` at seeded points (after the n-th file written under the artifacts
root, plus up to 50 ms), then the same command again: it resumes, and the library's vectors equal an
uninterrupted build's (max abs difference <= 1e-6; batches may differ after a resume), its index holds
exactly the catalogue's embedded files, and the catalogue never references a missing or damaged chunk."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
from crash_harness import files_under, kill_after_writes, run
from library_helpers import make_folder

pytestmark = pytest.mark.slow


def _state(root, monkeypatch):
    """(vectors by path, index ids, catalogue ids) of library ``lib`` under artifacts root ``root``."""
    monkeypatch.setenv("CAPSEARCH_ARTIFACTS", str(root))
    from core.library.library import Library
    from core.library.update import vectors_by_path

    with Library.open("lib") as lib:
        model = lib.active
        assert model is not None
        vectors = vectors_by_path(lib, model)
        index = lib.index(model, lib.store(model))
        return vectors, sorted(index.live_ids().tolist()), sorted(lib.catalogue.indexed(model.key))


def test_a_killed_library_add_resumes_to_the_same_vectors(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    make_folder(photos, 36)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff nope")
    argv = ("library", "add", str(photos), "--name", "lib", "--model", "capsearch-tiny")
    argv += ("--device", "cpu", "--precision", "fp32", "--batch-size", "4")
    clean = tmp_path / "clean"
    run(argv, clean)
    made = files_under(clean)
    want, want_index, want_catalogue = _state(clean, monkeypatch)
    assert len(want) == 36 and want_index == want_catalogue
    rng = random.Random(7)
    killed = 0
    for i in range(3):
        root = tmp_path / f"kill{i}"
        killed += kill_after_writes(argv, root, rng.randint(1, made), rng.uniform(0, 0.05))
        run(argv, root)
        got, index_ids, catalogue_ids = _state(root, monkeypatch)
        assert sorted(got) == sorted(want)
        assert max(float(np.abs(got[p] - want[p]).max()) for p in want) <= 1e-6
        assert index_ids == catalogue_ids
        shutil.rmtree(root)
    assert killed >= 2
