"""``capsearch embed``: encode (or reuse the cache of) a dataset split's images and captions."""

from __future__ import annotations

import argparse
import contextlib
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from core.cli.console import RichReporter, add_command, print_format_note
from core.cli.numbers import count
from core.cli.options import BACKEND_CHOICES, PRECISION_CHOICES, add_common_options, dataset_of, model_of
from core.errors import CapsearchError
from core.safe_text import json_text, markup_safe

if TYPE_CHECKING:
    from core.data.records import PreparedDataset
    from core.embed.cache import SplitEmbeddings
    from core.models.loading import LoadedModel


def register_embed(sub: argparse._SubParsersAction) -> None:
    """Add ``embed`` (its dataset/model options are the shared ones of the retrieval commands)."""
    parser = add_command(
        sub,
        "embed",
        _embed,
        help="embed a split's images and captions into the cache (reused when still valid)",
        description="embed a split's images and captions into artifacts/embeddings/<model-id>/<dataset>/<split>/; "
        "a valid cache is reused, a stale one rebuilt, an interrupted run resumed",
    )
    add_common_options(parser, split_help="dataset split, or all (default: test)")
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        help="inference number format: fp32 (the default, exact), fast (bf16 on GPUs and on CPUs with "
        "native bf16, else fp32fast: fp32 through the engine's fast path, packed and not bit-exact), "
        "fp32fast, bf16 or fp16; each keeps its own cache; "
        "$CAPSEARCH_PRECISION sets the default",
    )
    parser.add_argument("--batch-size", type=count(1), default=64, help="images per batch (default 64)")
    parser.add_argument(
        "--workers",
        type=count(0),
        help="spawned image decode processes (default: 0 = decoding threads in this process, on a GPU too)",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (the default); ray: an actor pool on a Ray cluster, one model per actor "
        "(needs pip install 'capsearch\\[ray]'; same vectors, same cache)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="torch",
        help="image backend of the local engine: torch (the default) or openvino (the image tower converted "
        "to OpenVINO, faster on some CPUs; needs pip install 'capsearch\\[openvino]'; same cache)",
    )
    parser.add_argument(
        "--address",
        help="with --engine ray: the cluster to join, auto (the running one) or HOST:PORT "
        "(default: start a local Ray on this machine)",
    )
    parser.add_argument(
        "--actors", type=count(1), help="with --engine ray: actors (default: one per GPU, else one per CPU)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary per split to stdout")


def _embed(args: argparse.Namespace) -> int:
    from core.data.records import load_dataset
    from core.embed.cache import split_embeddings
    from core.embed.fp32_fast import vectors_label
    from core.models.loading import load_model

    if args.engine == "ray":
        from core.embed.ray_engine import import_ray

        if args.backend != "torch":
            raise CapsearchError("--backend openvino applies to --engine local", hint="drop --engine ray")
        import_ray()  # a missing Ray is said before any work
    elif args.address or args.actors:
        raise CapsearchError("--address and --actors apply to --engine ray", hint="add --engine ray")
    if args.backend != "torch":
        from core.embed.openvino_backend import import_openvino

        import_openvino()  # a missing OpenVINO is said before any work
    data = load_dataset(dataset_of(args))
    splits = data.splits if args.split == "all" else [args.split]
    name = model_of(args)
    lm = load_model(name, args.pretrained, device=args.device, precision=args.precision)
    print_format_note(lm, args.precision)
    if args.backend != "torch":
        from core.embed.openvino_backend import check_backend

        check_backend(lm, args.backend)
    rows = []
    with RichReporter() as reporter, _cluster(args):
        for split in splits:
            start = time.perf_counter()
            if args.engine == "ray":
                emb = _on_ray(args, name, lm, data, split, reporter)
            else:
                emb = split_embeddings(
                    lm,
                    data,
                    split,
                    reporter=reporter,
                    batch_size=args.batch_size,
                    workers=args.workers,
                    backend=args.backend,
                )
            summary = _summary(lm, data.name, split, emb, time.perf_counter() - start)
            rows.append({**summary, "engine": args.engine, "backend": args.backend})
    if args.json:
        print(json_text(rows, indent=2))
    else:
        title = f"embeddings of {data.name} by {lm.model_id} ({vectors_label(lm)} on {lm.device})"
        Console().print(_table(title, rows))
    return 0


def _cluster(args: argparse.Namespace) -> AbstractContextManager[object]:
    """With --engine ray, one Ray connection for every split; else nothing."""
    if args.engine != "ray":
        return contextlib.nullcontext()
    from core.embed.ray_engine import ray_session

    return ray_session(args.address)


def _on_ray(
    args: argparse.Namespace,
    name: str,
    lm: LoadedModel,
    data: PreparedDataset,
    split: str,
    reporter: RichReporter,
) -> SplitEmbeddings:
    """One split embedded by the Ray engine (the actors load the model from ``name`` themselves)."""
    from core.embed.ray_engine import ModelSpec, RayOptions, ray_split_embeddings

    options = RayOptions(address=args.address, actors=args.actors, batch_size=args.batch_size)
    spec = ModelSpec.of(name, args.pretrained, lm)
    return ray_split_embeddings(lm, spec, data, split, reporter, options)


def _summary(
    lm: LoadedModel, dataset: str, split: str, emb: SplitEmbeddings, seconds: float
) -> dict[str, Any]:
    """One split's embedding run as JSON."""
    from core.embed.fp32_fast import vectors_label

    return {
        "model_id": lm.model_id,
        "precision": lm.precision,
        "computed_in": vectors_label(lm),
        "device": str(lm.device),
        "dataset": dataset,
        "split": split,
        "images": len(emb.records),
        "captions": len(emb.captions),
        "dims": int(emb.image_emb.shape[1]),
        "failed": [list(f) for f in emb.failed],
        "reused": emb.reused,
        "seconds": round(seconds, 3),
        "encode_seconds": emb.encode_seconds,
        "cache_dir": str(emb.cache_dir),
    }


def _table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for column in ("split", "images", "captions", "dims", "failed", "cache", "seconds", "folder"):
        table.add_column(
            column,
            justify="right" if column in ("images", "captions", "dims", "failed", "seconds") else "left",
        )
    for row in rows:
        cache = f"reused (saved ~{row['encode_seconds']:.1f} s)" if row["reused"] else "built"
        table.add_row(
            str(row["split"]),
            str(row["images"]),
            str(row["captions"]),
            str(row["dims"]),
            str(len(row["failed"])),
            cache,
            f"{row['seconds']:.2f}",
            markup_safe(row["cache_dir"]),
        )
    return table
