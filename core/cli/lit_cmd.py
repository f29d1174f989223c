"""``capsearch train --model capsearch-lit-*``: head training on cached frozen-tower features
(:mod:`core.train.lit`), reached from the ``train`` command when the model is a config with package-supplied
towers. The ``train`` options map onto :class:`core.train.lit.LitConfig`; every caption of an image is used
per step (at least 5, or ``--captions-per-image`` when larger)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from core.cli.console import RichReporter, console
from core.safe_text import json_text


def train_lit_command(args: argparse.Namespace) -> int:
    from core.data.records import load_dataset
    from core.paths import models_dir, safe_name
    from core.train.lit import LitConfig, train_lit

    dataset = load_dataset(args.dataset)
    from core.cli.train_cmds import _overrides

    shared = {k: v for k, v in _overrides(args).items() if k in LitConfig.__dataclass_fields__}
    cfg = LitConfig(**{**shared, "captions_per_image": max(5, args.captions_per_image)})
    name = args.name or safe_name(f"{Path(args.model).name}-{dataset.name}")
    with RichReporter() as reporter:
        summary = train_lit(args.model, dataset, models_dir() / name, cfg, reporter)
    brief = {k: summary[k] for k in ("model", "model_id", "best_epoch", "stopped", "train_seconds", "steps")}
    brief["feature_seconds"] = summary["feature_seconds"]
    brief["val"] = summary["val"]
    if args.json:
        print(json_text(brief, indent=2))
    else:
        from core.cli.train_cmds import _recall_table

        Console().print(
            _recall_table(f"best val recall (epoch {summary['best_epoch']})", {"val": summary["val"]})
        )
        console.print(
            f"model: {summary['model']}  ({summary['model_id']}); {summary['steps']} steps, "
            f"{summary['train_seconds']:.0f} s of head training after {summary['feature_seconds']:.0f} s of features"
        )
    return 0
