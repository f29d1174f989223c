"""What the app searches: a dataset, a model (and its weights), a split and an index kind.

``None`` for the dataset means the built-in demo (``core.demo.ensure_demo``); ``None`` for the model
means the newest model trained on the dataset, else the demo model. Opening runs in a worker thread: the
heavy core modules (torch, open_clip, faiss) are imported here, lazily.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import core
from core.progress import Reporter

if TYPE_CHECKING:
    from core.search.retriever import Retriever


@dataclass(frozen=True)
class Source:
    dataset: str | None = None
    model: str | None = None
    pretrained: str | None = None
    split: str = "test"
    index: str = "auto"

    def describe(self) -> str:
        model = self.model or "the demo model"
        if self.pretrained:
            model += f" ({self.pretrained} weights)"
        return f"{self.dataset or 'the demo dataset'} / {self.split} with {model}"


def trained_model_for(dataset: str) -> str | None:
    """The newest checkpoint under the artifacts' models directory trained on ``dataset`` (by name)."""
    from core.paths import models_dir

    found = []
    for meta in models_dir().glob("*/model.json"):
        try:
            if json.loads(meta.read_text(encoding="utf-8")).get("dataset") == dataset:
                found.append(meta)
        except (OSError, ValueError):
            continue
    return str(max(found, key=lambda p: p.stat().st_mtime).parent) if found else None


def resolve(source: Source, reporter: Reporter) -> tuple[str, str]:
    """The dataset and model to open. Without a model: the newest one trained on the dataset, else the
    demo model; without a dataset: the demo's (both prepared and trained on first use)."""
    if source.dataset is not None and source.model is not None:
        return source.dataset, source.model
    if source.dataset is not None:
        from core.data.records import load_dataset

        model = trained_model_for(load_dataset(source.dataset).name)
        if model is not None:
            return source.dataset, model
    from core.demo import ensure_demo

    dataset, model_dir = ensure_demo(reporter)
    return source.dataset or str(dataset.dir), source.model or str(model_dir)


def open_retriever(source: Source, reporter: Reporter) -> Retriever:
    """Open ``source`` for searching (embeds the split and builds the index on first use; cached)."""
    from core.search.retriever import Retriever

    dataset, model = resolve(source, reporter)
    return Retriever.open(
        dataset,
        model,
        pretrained=source.pretrained,
        split=source.split,
        index=source.index,
        reporter=reporter,
    )


def model_choices() -> list[tuple[str, str]]:
    """``(label, value)`` for every model the app can open: trained checkpoints and built-in configs.

    Read from the file system only (no torch import): checkpoint folders under the artifacts' models
    directory and the capsearch open_clip configs shipped with the core.
    """
    from core.paths import models_dir

    choices: list[tuple[str, str]] = []
    root = models_dir()
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if (folder / "model.json").is_file():
                choices.append((f"{folder.name} (trained)", str(folder)))
    configs = Path(core.__file__).parent / "models" / "configs"
    for config in sorted(configs.glob("*.json")):
        choices.append((f"{config.stem} (untrained)", config.stem))
    choices.append(("ViT-B-32 (open_clip; weights: openai)", "ViT-B-32"))
    return choices


def dataset_choices() -> list[tuple[str, str]]:
    """``(label, value)`` for every prepared dataset."""
    from core.data.records import list_datasets

    choices = []
    for d in list_datasets():
        images = sum(int(v.get("images", 0)) for v in d.meta.get("splits", {}).values())
        choices.append((f"{d.name} · {images:,} images", str(d.dir)))
    return choices
