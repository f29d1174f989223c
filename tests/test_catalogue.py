"""The model catalogue: which models exist and the default model rule, without importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from core.models.catalogue import (
    builtin_configs,
    default_model,
    demo_model_dir,
    list_checkpoints,
    newest_trained_on,
)


def fake_checkpoint(artifacts: Path, name: str, dataset: str, age_s: float = 0) -> Path:
    folder = artifacts / "models" / name
    folder.mkdir(parents=True)
    meta = folder / "model.json"
    meta.write_text(json.dumps({"dataset": dataset, "model_cfg": {}}), encoding="utf-8")
    then = time.time() - age_s
    os.utime(meta, (then, then))
    return folder


def test_importing_the_catalogue_loads_no_torch() -> None:
    code = (
        "import sys, core.models.catalogue as c\n"
        "c.builtin_configs(); c.list_checkpoints(); c.default_model('synthetic')\n"
        "heavy = sorted(m for m in ('torch', 'open_clip', 'numpy', 'faiss') if m in sys.modules)\n"
        "print(heavy); sys.exit(1 if heavy else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_catalogue_lists_builtin_configs_and_trained_checkpoints(artifacts: Path) -> None:
    assert {"capsearch-tiny", "capsearch-compact-demo"} <= set(builtin_configs())
    assert list_checkpoints() == []
    mine = fake_checkpoint(artifacts, "mine", "flickr8k")
    (artifacts / "models" / "not-a-model").mkdir()
    assert list_checkpoints() == [mine]


def test_the_default_model_is_the_newest_trained_on_the_dataset_else_the_demo(artifacts: Path) -> None:
    assert default_model("flickr8k") == demo_model_dir() == artifacts / "models" / "demo-synthetic"
    fake_checkpoint(artifacts, "older", "flickr8k", age_s=60)
    newer = fake_checkpoint(artifacts, "newer", "flickr8k")
    fake_checkpoint(artifacts, "elsewhere", "photos")
    assert newest_trained_on("flickr8k") == newer
    assert default_model("flickr8k") == newer
    assert default_model("synthetic") == demo_model_dir()
    assert default_model(None) == demo_model_dir()


def test_an_unreadable_model_json_is_skipped(artifacts: Path) -> None:
    broken = artifacts / "models" / "broken"
    broken.mkdir(parents=True)
    (broken / "model.json").write_text("{not json", encoding="utf-8")
    assert newest_trained_on("flickr8k") is None
