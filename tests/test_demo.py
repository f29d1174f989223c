"""ensure_demo: prepares the synthetic scenes and trains the demo model once, then reuses both."""

from __future__ import annotations

import dataclasses
import json

import core.demo as demo
from core.models.loading import load_model
from core.paths import results_dir


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
