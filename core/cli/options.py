"""Options the retrieval commands share (dataset, split, model, weights, device) and their defaults."""

from __future__ import annotations

import argparse

from core.demo import DEMO_DATASET
from core.errors import DatasetError, ModelError

DEFAULT_DATASET = DEMO_DATASET
# core.models.device.PRECISIONS less "auto" (spelled out: the parser must not import torch).
PRECISION_CHOICES = ("fp32", "fast", "fp32fast", "bf16", "fp16")
# core.embed.openvino_backend.BACKENDS (spelled out for the same reason).
BACKEND_CHOICES = ("torch", "openvino")


def add_common_options(
    parser: argparse.ArgumentParser, split: str = "test", split_help: str | None = None
) -> None:
    """The dataset, split, model, weights and device options every retrieval command shares."""
    parser.add_argument(
        "--dataset", help=f"prepared dataset name or folder (default: {DEFAULT_DATASET!r} if prepared)"
    )
    parser.add_argument(
        "--model",
        help="open_clip model name, checkpoint dir or model under artifacts/models "
        "(default: the newest model trained on the dataset, else the built-in demo model, once trained)",
    )
    parser.add_argument(
        "--pretrained", help="open_clip weights tag or a local weights file (default: random init)"
    )
    parser.add_argument("--split", default=split, help=split_help or f"dataset split (default: {split})")
    parser.add_argument("--device", help="cpu, cuda or mps (default: the best available)")


def dataset_of(args: argparse.Namespace) -> str:
    """``--dataset``, else the default dataset when it is prepared."""
    if args.dataset:
        return str(args.dataset)
    from core.data.records import load_dataset

    try:
        load_dataset(DEFAULT_DATASET)
    except DatasetError as err:
        raise DatasetError(
            f"no --dataset given and no {DEFAULT_DATASET!r} dataset is prepared",
            hint="pass --dataset NAME (`capsearch datasets` lists them) or run `capsearch prepare synthetic`",
        ) from err
    return DEFAULT_DATASET


def model_of(args: argparse.Namespace) -> str:
    """``--model``, else :func:`core.models.catalogue.default_model` of ``--dataset`` (the demo model
    without one), which must have been trained."""
    if args.model:
        return str(args.model)
    from core.data.records import load_dataset
    from core.models.catalogue import default_model, is_checkpoint_dir

    path = default_model(load_dataset(args.dataset).name if args.dataset else None)
    if not is_checkpoint_dir(path):
        raise ModelError(
            "no --model given and the demo model has not been trained yet",
            hint="pass --model NAME (e.g. capsearch-tiny or ViT-B-32), or run `capsearch demo` once",
        )
    return str(path)
