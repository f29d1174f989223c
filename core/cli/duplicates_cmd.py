"""``capsearch duplicates``: groups of near-identical images in a prepared dataset."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from core.cli.console import RichReporter, add_command
from core.cli.numbers import SIMILARITY
from core.cli.options import add_common_options, dataset_of, model_of
from core.near_duplicates import DEFAULT_THRESHOLD
from core.safe_text import markup_safe

SHOWN = 20


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``duplicates``."""
    p = add_command(
        sub,
        "duplicates",
        _duplicates,
        help="group near-identical images of a dataset (every pair in a group above --threshold)",
        description="embed (or reuse the cache of) a dataset's images and group near-duplicates: FAISS range "
        "search, then groups in which every two images are within the threshold (no chaining through "
        "intermediates)",
    )
    add_common_options(p, split="all", split_help="dataset split, or all (default: all)")
    p.add_argument(
        "--threshold",
        type=SIMILARITY,
        default=DEFAULT_THRESHOLD,
        help=f"cosine similarity above which two images are near-duplicates (default: {DEFAULT_THRESHOLD})",
    )
    p.add_argument("--json", action="store_true", help="print every group as JSON to stdout")


def _duplicates(args: argparse.Namespace) -> int:
    from core.data.records import load_dataset
    from core.models.loading import load_model
    from core.search.duplicates import dataset_duplicates

    data = load_dataset(dataset_of(args))
    lm = load_model(model_of(args), args.pretrained, device=args.device)
    splits = None if args.split == "all" else [args.split]
    with RichReporter() as reporter:
        found = dataset_duplicates(lm, data, splits, args.threshold, reporter)
    if args.json:
        print(json.dumps(found.to_dict(), indent=2, ensure_ascii=False))
        return 0
    out = Console()
    grouped = sum(len(g.ids) for g in found.groups)
    out.print(
        f"[bold]{markup_safe(data.name)}[/]: {len(found.groups):,} groups of near-duplicates "
        f"({grouped:,} of {found.images:,} images) at threshold {found.threshold:g} by "
        f"{markup_safe(found.model_id)}",
        soft_wrap=True,
        highlight=False,
    )
    table = Table()
    for col, justify in (("#", "right"), ("images", "right"), ("similarity", "right"), ("members", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for n, group in enumerate(found.groups[:SHOWN], 1):
        span = f"{group.min_similarity:.3f}-{group.max_similarity:.3f}"
        table.add_row(str(n), str(len(group.ids)), span, markup_safe(", ".join(group.ids)))
    if found.groups:
        out.print(table)
    if len(found.groups) > SHOWN:
        out.print(f"[dim]... and {len(found.groups) - SHOWN:,} more (--json lists them all)[/]")
    return 0
