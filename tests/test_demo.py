"""ensure_demo: prepares the synthetic scenes and trains the demo model once, then reuses both, also from
an artifacts root moved elsewhere."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

import core.demo as demo
from core.errors import DatasetError
from core.models.loading import load_model
from core.paths import results_dir
from core.search.retriever import Retriever


def test_ensure_demo_prepares_trains_once_and_reuses(artifacts, monkeypatch):
    small = dataclasses.replace(demo.demo_train_config(), epochs=1, time_budget_s=None)
    monkeypatch.setattr(demo, "DEMO_SCENES", 60)
    monkeypatch.setattr(demo, "demo_train_config", lambda: small)
    dataset, model_dir = demo.ensure_demo()
    assert dataset.name == demo.DEMO_DATASET and len(dataset.split("train")) > 0
    lm = load_model(model_dir, device="cpu")
    assert lm.model_id.startswith(f"{demo.DEMO_MODEL}@")
    record = json.loads((results_dir() / "demo-train.json").read_text())
    assert record["model_id"] == lm.model_id and "R@1" in record["test"]["text_to_image"]
    weights = artifacts / "models" / demo.DEMO_MODEL / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again, same_dir = demo.ensure_demo()
    assert same_dir == model_dir and weights.stat().st_mtime_ns == stamp


def test_a_moved_artifacts_root_keeps_a_working_demo(artifacts, monkeypatch, tmp_path):
    """The demo's dataset keeps its image root relative to its own folder, so an artifacts root copied or
    mounted elsewhere still searches (nothing prepared or trained again); a dataset whose images are gone
    (an older absolute root) is prepared again, and a split none of whose images can be read says so."""
    small = dataclasses.replace(demo.demo_train_config(), epochs=1, time_budget_s=None)
    monkeypatch.setattr(demo, "DEMO_SCENES", 60)
    monkeypatch.setattr(demo, "demo_train_config", lambda: small)
    demo.ensure_demo()
    meta_file = Path("datasets") / demo.DEMO_DATASET / "dataset.json"
    assert json.loads((artifacts / meta_file).read_text())["root"] == "images"

    moved = tmp_path / "mounted-elsewhere"
    shutil.copytree(artifacts, moved)
    shutil.rmtree(artifacts)
    monkeypatch.setenv("CAPSEARCH_ARTIFACTS", str(moved))
    weights = moved / "models" / demo.DEMO_MODEL / "model.safetensors"
    stamp, meta_stamp = weights.stat().st_mtime_ns, (moved / meta_file).stat().st_mtime_ns
    dataset, model_dir = demo.ensure_demo()
    assert dataset.root == moved / "datasets" / demo.DEMO_DATASET / "images"
    assert weights.stat().st_mtime_ns == stamp and (moved / meta_file).stat().st_mtime_ns == meta_stamp
    caption = dataset.split("test")[0].captions[0]
    assert Retriever.open(dataset, model_dir, device="cpu").search_text(caption, 3)

    images = dataset.root
    shutil.rmtree(images)
    with pytest.raises(DatasetError, match=r"none of the \d+ images of synthetic/test could be read"):
        Retriever.open(dataset, model_dir, device="cpu")
    meta = json.loads((moved / meta_file).read_text())
    (moved / meta_file).write_text(json.dumps({**meta, "root": str(tmp_path / "gone" / "images")}))
    again, _ = demo.ensure_demo()
    assert again.root == images and images.is_dir() and weights.stat().st_mtime_ns == stamp
    assert Retriever.open(again, model_dir, device="cpu").search_text(caption, 3)
