"""CLI commands for training and fine-tuning: ``train``, ``finetune`` and ``demo``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich_argparse import RawDescriptionRichHelpFormatter

from core.cli.console import RichReporter, add_command, console
from core.cli.numbers import count, number
from core.cli.options import PRECISION_CHOICES
from core.safe_text import json_text, markup_safe

DEFAULT_CONFIG = "capsearch-lit-lite2"  # frozen pretrained towers + trained heads (core.train.lit)
DEMO_QUERY = "a large red circle on a white background"

TRAIN_DESCRIPTION = """\
Train a model contrastively (CLIP loss) on a prepared dataset's train split, validating on val each epoch
and keeping the best checkpoint under artifacts/models/<name>/. An interrupted run resumes where it stopped.

  capsearch train --dataset flickr8k --name compact-flickr8k --time-budget-min 32 \\
      --captions-per-image 5 --flip --crop-scale 0.4 --weight-decay 0.2      # the built-in compact model
  capsearch train --dataset synthetic --model capsearch-compact-demo --epochs 20 --lr 2e-3
"""
FINETUNE_DESCRIPTION = """\
Fine-tune a model with the recommended recipe (lr 1e-5, short warmup, a few epochs, WiSE-FT alpha sweep on
val) and print test recall before and after.

  capsearch finetune --model compact-flickr8k --dataset my-photos
  capsearch finetune --model ViT-B-32 --pretrained openai --dataset flickr8k --forgetting-dataset synthetic
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``finetune`` and ``demo``."""
    train = add_command(
        sub,
        "train",
        _train,
        help="train a model on a prepared dataset",
        description=TRAIN_DESCRIPTION,
        formatter_class=RawDescriptionRichHelpFormatter,
    )
    train.add_argument("--dataset", required=True, help="prepared dataset name or folder")
    train.add_argument(
        "--model",
        default=DEFAULT_CONFIG,
        help=f"capsearch config (random init), checkpoint or open_clip name (default {DEFAULT_CONFIG})",
    )
    train.add_argument("--pretrained", help="open_clip weights tag or local weights file to start from")
    train.add_argument("--name", help="output name under artifacts/models (default: <model>-<dataset>)")
    _add_train_options(train, epochs=30, lr=1e-3, warmup=50, freeze="auto")
    train.add_argument("--restart", action="store_true", help="ignore a saved last state and start over")

    ft = add_command(
        sub,
        "finetune",
        _finetune,
        help="fine-tune with the recommended recipe; recall before/after",
        description=FINETUNE_DESCRIPTION,
        formatter_class=RawDescriptionRichHelpFormatter,
    )
    ft.add_argument(
        "--model", required=True, help="open_clip name, checkpoint dir or model under artifacts/models"
    )
    ft.add_argument("--pretrained", help="open_clip weights tag or local weights file")
    ft.add_argument("--dataset", required=True, help="prepared dataset to fine-tune on (train/val/test)")
    ft.add_argument("--name", help="output name under artifacts/models (default: ft-<model>-<dataset>)")
    ft.add_argument(
        "--forgetting-dataset", help="a second prepared dataset whose test recall shows forgetting"
    )
    ft.add_argument(
        "--alphas", type=number(0, 1), nargs="+", help="WiSE-FT alphas to sweep (default 0, 0.1, ..., 1)"
    )
    # None: the recipe's own value (core.train.recipes; capsearch-lit heads: core.train.lit_finetune.RECIPE)
    _add_train_options(ft, epochs=None, lr=None, warmup=None, freeze="auto", patience=None)

    demo = add_command(
        sub,
        "demo",
        _demo,
        help="the offline demo: synthetic scenes, compact model, index, test recall, a sample search",
    )
    demo.add_argument("--query", default=DEMO_QUERY, help=f"sample text query (default: {DEMO_QUERY!r})")
    demo.add_argument("-k", type=count(1), default=5, help="results to show (default 5)")


def _add_train_options(
    p: argparse.ArgumentParser,
    epochs: int | None,
    lr: float | None,
    warmup: int | None,
    freeze: str,
    patience: int | None = 3,
) -> None:
    """Add the training options; a default of None means "the recipe's" (fine-tuning)."""
    from core.train.choices import LOSSES, POLICIES

    p.add_argument("--epochs", type=count(1), default=epochs, help=f"epochs (default {_default(epochs)})")
    p.add_argument("--batch-size", type=count(1), default=128, help="batch size (default 128)")
    p.add_argument(
        "--lr", type=number(0, low_open=True), default=lr, help=f"peak learning rate (default {_default(lr)})"
    )
    p.add_argument(
        "--warmup", type=count(0), default=warmup, help=f"linear warmup steps (default {_default(warmup)})"
    )
    p.add_argument("--weight-decay", type=number(0), default=0.1, help="AdamW weight decay (default 0.1)")
    p.add_argument("--accum", type=count(1), default=1, help="gradient accumulation steps (default 1)")
    p.add_argument("--loss", choices=LOSSES, default="clip", help="clip (InfoNCE) or margin (VSE++ hinge)")
    p.add_argument("--margin", type=number(0), default=0.2, help="margin of the margin loss (default 0.2)")
    p.add_argument(
        "--freeze",
        default=freeze,
        help=f"auto or one of {', '.join(POLICIES)} (default {freeze}: frozen-text with a pretrained "
        "Hugging Face text tower, else full)",
    )
    p.add_argument(
        "--patience",
        type=count(0),
        default=patience,
        help=f"early-stop after N epochs without val gain (0: off; default {_default(patience)})",
    )
    p.add_argument(
        "--time-budget-min",
        type=number(0, low_open=True),
        help="stop after this many minutes (cosine ends there)",
    )
    p.add_argument(
        "--crop-scale",
        type=number(0, 1, low_open=True),
        default=0.8,
        help="smallest random-crop area, 1 = no crops",
    )
    p.add_argument(
        "--captions-per-image",
        type=count(1),
        default=1,
        help="captions of each image per step, loss averaged (cheap with a frozen text trunk; default 1)",
    )
    p.add_argument(
        "--flip", action="store_true", help="random horizontal flips (not for captions naming sides)"
    )
    p.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        help="training number format: fast (the default: bf16 autocast on GPUs and on CPUs with native "
        "bf16, else fp32), fp32 (exact), bf16 or fp16; $CAPSEARCH_PRECISION sets the default",
    )
    p.add_argument("--device", help="cpu, cuda or mps (default: $CAPSEARCH_DEVICE, else the best available)")
    p.add_argument("--seed", type=count(0), default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the result summary as JSON to stdout")


def _default(value: float | None) -> str:
    return "the recipe's" if value is None else f"{value:g}"


RECIPE_DEFAULTED = ("epochs", "lr", "warmup_steps", "patience")
"""Options fine-tuning leaves to its recipe when they are not given."""


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    given = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup_steps": args.warmup,
        "weight_decay": args.weight_decay,
        "accum_steps": args.accum,
        "loss": args.loss,
        "margin": args.margin,
        "freeze": args.freeze,
        "patience": args.patience,
        "crop_scale": args.crop_scale,
        "flip": args.flip,
        "captions_per_image": args.captions_per_image,
        "precision": args.precision or "auto",  # not given: $CAPSEARCH_PRECISION, else fast
        "device": args.device,
        "seed": args.seed,
        "time_budget_s": args.time_budget_min * 60 if args.time_budget_min else None,
    }
    return {k: v for k, v in given.items() if v is not None or k not in RECIPE_DEFAULTED}


def _recall_table(title: str, columns: dict[str, dict[str, Any]]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    for direction in ("text_to_image", "image_to_text"):
        for k in ("R@1", "R@5", "R@10"):
            table.add_row(
                f"{direction.replace('_to_', ' → ')} {k}",
                *[f"{m[direction][k]:.2f}" if m else "-" for m in columns.values()],
            )
    table.add_row("mean recall", *[f"{m['mean_recall']:.2f}" if m else "-" for m in columns.values()])
    return table


def _train(args: argparse.Namespace) -> int:
    from core.cli.lit_cmd import train_lit_command
    from core.data.records import load_dataset
    from core.paths import models_dir, safe_name
    from core.train.lit import is_lit_config
    from core.train.recipes import resolve_freeze
    from core.train.setup import start_model
    from core.train.trainer import TrainConfig, train

    if is_lit_config(args.model):  # frozen package towers: head training on cached features
        return train_lit_command(args)
    dataset = load_dataset(args.dataset)
    cfg = TrainConfig(**_overrides(args))
    name = args.name or safe_name(f"{Path(args.model).name}-{dataset.name}")
    with RichReporter() as reporter:
        start = start_model(args.model, args.pretrained, device=args.device or "cpu", seed=args.seed)
        cfg.freeze = resolve_freeze(cfg.freeze, start.model)
        result = train(start, dataset, models_dir() / name, cfg, reporter, resume=not args.restart)
    summary = {
        "model": str(result.out_dir),
        "model_id": result.model_id,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "train_seconds": round(result.train_seconds, 1),
        "steps": result.steps,
        "val": result.best_val,
    }
    if args.json:
        print(json_text(summary, indent=2))
    else:
        if result.best_val:
            Console().print(
                _recall_table(f"best val recall (epoch {result.best_epoch})", {"val": result.best_val})
            )
        console.print(
            f"model: {result.out_dir}  ({result.model_id}); stopped by {result.stopped} after "
            f"{result.steps} steps, {result.train_seconds:.0f} s"
        )
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from core.train import wise_ft
    from core.train.recipes import finetune

    with RichReporter() as reporter:
        summary = finetune(
            args.model,
            args.dataset,
            pretrained=args.pretrained,
            name=args.name,
            forgetting_dataset=args.forgetting_dataset,
            alphas=tuple(args.alphas or wise_ft.DEFAULT_ALPHAS),
            reporter=reporter,
            **_overrides(args),
        ).to_json()
    if args.json:
        print(json_text({k: v for k, v in summary.items() if k not in ("val_curve",)}, indent=2))
        return 0
    out = Console()
    out.print(
        _recall_table(
            f"{summary['dataset']} test recall",
            {"before": summary["test_before"], "after": summary["test_after"]},
        )
    )
    if summary["forgetting_dataset"]:
        out.print(
            _recall_table(
                f"forgetting: {summary['forgetting_dataset']} test recall",
                {"before": summary["forgetting_before"], "after": summary["forgetting_after"]},
            )
        )
    out.print(
        f"WiSE-FT alpha = {summary['wise_ft_alpha']:g}; model: {summary['name']} ({summary['model_id']})"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from core.demo import ensure_demo
    from core.evaluation.recall import mean_recall
    from core.evaluation.runner import run_eval
    from core.search.retriever import Retriever

    with RichReporter() as reporter:
        dataset, model = ensure_demo(reporter)
        result = run_eval(dataset, "test", model, index="exact", reporter=reporter)
        retriever = Retriever.open(dataset, model, split="test", index="auto", reporter=reporter)
        hits = retriever.search_text(args.query, k=args.k)
    out = Console()
    metrics = {**result.metrics, "mean_recall": mean_recall(result.metrics)}
    out.print(
        _recall_table(f"demo model on {dataset.name}/test ({retriever.size} images)", {"exact": metrics})
    )
    table = Table(title=markup_safe(f"text → image: {args.query!r}"))
    for column in ("rank", "score", "image", "first caption"):
        table.add_column(column)
    for hit in hits:
        table.add_row(
            str(hit.rank),
            f"{hit.score:.3f}",
            markup_safe(hit.path),
            markup_safe(hit.record.captions[0] if hit.record.captions else ""),
        )
    out.print(table)
    out.print(f'model: {model}\nnext: capsearch search "a small blue star" -k 5   ·   capsearch app')
    return 0
