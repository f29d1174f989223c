"""Which models exist and which one a client opens by default, read from the file system alone.

Built-in configs are the ``configs/*.json`` shipped here; trained models are checkpoint folders (holding a
``model.json``) under the artifacts' ``models`` folder. Importing this module imports neither torch nor
open_clip, so the CLI, the terminal app and any other client can ask it before loading a model.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.paths import models_dir

CONFIG_DIR = Path(__file__).resolve().with_name("configs")
META_FILE = "model.json"
DEMO_MODEL = "demo-synthetic"


def builtin_configs() -> list[str]:
    """Names of the configs shipped in ``core/models/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def is_checkpoint_dir(path: Path) -> bool:
    return (path / META_FILE).is_file()


def list_checkpoints() -> list[Path]:
    """Checkpoint folders saved under the artifacts' ``models`` folder, by name."""
    root = models_dir()
    return sorted(p for p in root.iterdir() if is_checkpoint_dir(p)) if root.is_dir() else []


def demo_model_dir() -> Path:
    """Where the built-in demo model is (or will be, once :func:`core.demo.ensure_demo` trained it)."""
    return models_dir() / DEMO_MODEL


def newest_trained_on(dataset: str) -> Path | None:
    """The most recently saved checkpoint whose ``model.json`` names ``dataset`` as its training data."""
    found = []
    for folder in list_checkpoints():
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("dataset") == dataset:
            found.append(folder)
    return max(found, key=lambda p: (p / META_FILE).stat().st_mtime) if found else None


def default_model(dataset: str | None) -> Path:
    """The model a client opens when none is named: the newest one trained on ``dataset`` (a prepared
    dataset's name), else the demo model; without a dataset (the built-in demo) the demo model. The demo
    model's folder is returned even before it has been trained."""
    newest = newest_trained_on(dataset) if dataset is not None else None
    return newest if newest is not None else demo_model_dir()
