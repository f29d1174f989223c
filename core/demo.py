"""The built-in demo: the synthetic captioned scenes and a compact model trained on them, made on first use.

The demo model (config ``capsearch-compact-demo``: a small ResNet image tower trained from scratch at 64 px and
the pretrained all-MiniLM-L6-v2 text tower, frozen) trains in 65 s on a 2-core CPU; its test recall and
training time are written to ``results/demo-train.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from core.data.records import PreparedDataset, load_dataset
from core.errors import DatasetError
from core.models.catalogue import DEMO_MODEL
from core.paths import models_dir, results_dir
from core.progress import Reporter, ensure

if TYPE_CHECKING:  # torch is slow to import: the trainer is imported where it is used
    from core.train.trainer import TrainConfig

DEMO_DATASET = "synthetic"
DEMO_CONFIG = "capsearch-compact-demo"
DEMO_SCENES = 1000


def demo_train_config() -> TrainConfig:
    """Training arguments of the demo model: the pretrained text trunk stays frozen (its caption features are
    computed once, so each step can use all five captions of every image), no crops or flips (the captions
    name positions and sides), 65 s of training and at least 240 steps."""
    from core.train.trainer import TrainConfig

    return TrainConfig(
        epochs=60,
        batch_size=64,
        lr=2e-3,
        warmup_steps=20,
        weight_decay=0.05,
        freeze="frozen-text",
        captions_per_image=5,
        crop_scale=1.0,
        flip=False,
        seed=0,
        time_budget_s=65,
        min_steps=240,  # a busy CPU trains longer rather than worse (a quiet one makes ~280 steps in 65 s)
    )


def _finished(out: Path) -> bool:
    history = out / "train.json"
    return history.is_file() and json.loads(history.read_text(encoding="utf-8")).get("status") == "finished"


def ensure_demo(reporter: Reporter | None = None) -> tuple[PreparedDataset, str]:
    """The synthetic dataset and the demo model's checkpoint dir, each prepared/trained first if missing
    (a dataset whose image folder is gone is prepared again: the scenes are deterministic, so the model
    still fits them; an interrupted demo training resumes)."""
    reporter = ensure(reporter)
    try:
        dataset: PreparedDataset | None = load_dataset(DEMO_DATASET)
    except DatasetError:
        dataset = None
    if dataset is None or not dataset.root.is_dir():  # missing, or its images left (a copied artifacts root)
        from core.data.prepare import prepare_synthetic

        reporter.log(f"preparing the built-in synthetic scenes (n={DEMO_SCENES})")
        dataset = prepare_synthetic(n=DEMO_SCENES, name=DEMO_DATASET, reporter=reporter)
    out = models_dir() / DEMO_MODEL
    if not _finished(out):
        _train_demo(dataset, out, reporter)
    return dataset, str(out)


def _train_demo(dataset: PreparedDataset, out: Path, reporter: Reporter) -> None:
    import torch

    from core.atomic import write_json
    from core.train.setup import start_model
    from core.train.trainer import load_best, train
    from core.train.validation import SplitData, evaluate

    reporter.log("training the demo model on the synthetic scenes (about a minute, once)")
    cfg = demo_train_config()
    start = start_model(DEMO_CONFIG, seed=cfg.seed, device="cpu")
    result = train(start, dataset, out, cfg, reporter, meta={"demo": True})
    load_best(start.model, out)
    test = evaluate(
        start.model, SplitData.load(start, dataset, "test", torch.device("cpu")), torch.device("cpu")
    )
    write_json(
        results_dir() / "demo-train.json",
        {
            "model_id": result.model_id,
            "config": DEMO_CONFIG,
            "dataset": dataset.name,
            "train_seconds": round(result.train_seconds, 1),
            "steps": result.steps,
            "stopped": result.stopped,
            "best_epoch": result.best_epoch,
            "threads": torch.get_num_threads(),
            "train_config": cfg.to_dict(),
            "test": test,
            "curve": result.curve,
        },
    )
