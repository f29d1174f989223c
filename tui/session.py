"""What the app searches: a dataset, a model (and its weights), a split and an index kind.

``None`` for the dataset means the built-in demo (``core.demo.ensure_demo``); ``None`` for the model
means the newest model trained on the dataset, else the demo model. Opening runs in a worker thread: the
heavy core modules (torch, open_clip, faiss) are imported here, lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.models.catalogue import builtin_configs, default_model, demo_model_dir, list_checkpoints
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
    library: str | None = None
    """A photo library to search instead of a dataset (see tui.library_session)."""

    def describe(self) -> str:
        if self.library is not None:
            return f"library {self.library}"
        model = self.model or "the demo model"
        if self.pretrained:
            model += f" ({self.pretrained} weights)"
        return f"{self.dataset or 'the demo dataset'} / {self.split} with {model}"


def resolve(source: Source, reporter: Reporter) -> tuple[str, str]:
    """The dataset and model to open. Without a model: :func:`core.models.catalogue.default_model` of the
    dataset (the newest model trained on it, else the demo model); without a dataset: the demo's. The
    demo dataset and model are prepared and trained on first use."""
    if source.dataset is not None:
        if source.model is not None:
            return source.dataset, source.model
        from core.data.records import load_dataset

        model = default_model(load_dataset(source.dataset).name)
        if model != demo_model_dir():
            return source.dataset, str(model)
    from core.demo import ensure_demo

    dataset, model_dir = ensure_demo(reporter)
    return source.dataset or str(dataset.dir), source.model or model_dir


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

    Read from :mod:`core.models.catalogue` (the file system only, no torch import).
    """
    choices = [(f"{folder.name} (trained)", str(folder)) for folder in list_checkpoints()]
    choices += [(f"{name} (untrained)", name) for name in builtin_configs()]
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
