"""``capsearch duplicates``: groups of near-identical images in a prepared dataset."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from core.cli.console import RichReporter, add_command
from core.cli.numbers import SIMILARITY, count
from core.cli.options import add_common_options, dataset_of, model_of
from core.near_duplicates import (
    DEFAULT_HASH_DISTANCE,
    DEFAULT_THRESHOLD,
    LOOSE_HASH_DISTANCE,
    LOOSE_THRESHOLD,
    PIXEL_HASH_DISTANCE,
    PIXEL_THRESHOLD,
)
from core.safe_text import json_text, markup_safe

if TYPE_CHECKING:
    from core.index.duplicates import DuplicateGroup, DuplicateRule

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
    add_rule_options(p)
    p.add_argument("--json", action="store_true", help="print every group as JSON to stdout")


def _hash_bits(text: str) -> int:
    """A number of hash bits, 0 to 64."""
    value = count(0)(text)
    if value > 64:
        raise argparse.ArgumentTypeError(f"{value} is more than the hash's 64 bits")
    return value


def add_rule_options(p: argparse.ArgumentParser) -> None:
    """``--threshold``, ``--hash-distance``, ``--pixel-threshold`` and ``--embeddings-only`` (shared with
    ``library duplicates``)."""
    p.add_argument(
        "--threshold",
        type=SIMILARITY,
        default=DEFAULT_THRESHOLD,
        help="cosine similarity of image embeddings at which two images are near-duplicates on that alone "
        f"(default: {DEFAULT_THRESHOLD})",
    )
    p.add_argument(
        "--hash-distance",
        type=_hash_bits,
        default=DEFAULT_HASH_DISTANCE,
        help="perceptual-hash bits (of 64) within which two images without thumbnails are near-duplicates "
        f"on that alone (default: {DEFAULT_HASH_DISTANCE}; also: within {LOOSE_HASH_DISTANCE} bits and "
        f"similarity {LOOSE_THRESHOLD})",
    )
    p.add_argument(
        "--pixel-threshold",
        type=SIMILARITY,
        default=PIXEL_THRESHOLD,
        help="the pixel match (thumbnails compared under small crops, -1 to 1) at which two images whose "
        f"hashes are within {PIXEL_HASH_DISTANCE} bits are near-duplicates (default: {PIXEL_THRESHOLD})",
    )
    p.add_argument(
        "--embeddings-only",
        action="store_true",
        help="group by embedding similarity alone (no perceptual hashes: finds fewer resized or "
        "re-encoded copies)",
    )


def rule_of(args: argparse.Namespace) -> DuplicateRule:
    """The near-duplicate rule the options ask for."""
    from core.index.duplicates import DuplicateRule

    return DuplicateRule(
        threshold=args.threshold, hash_distance=args.hash_distance, pixel_threshold=args.pixel_threshold
    )


def describe_rule(rule: DuplicateRule, hashed: bool) -> str:
    """One line: the rule the groups were made with."""
    if not hashed:
        return f"embedding similarity ≥ {rule.threshold:g}"
    return (
        f"similarity ≥ {rule.threshold:g}, or hash distance ≤ {rule.pixel_hash_distance} and pixel match "
        f"≥ {rule.pixel_threshold:g} (without thumbnails: hash distance ≤ {rule.hash_distance}, or "
        f"≤ {rule.loose_hash_distance} and similarity ≥ {rule.loose_threshold:g})"
    )


def groups_table(groups: list[DuplicateGroup]) -> Table:
    """The first groups: size, similarity span, largest hash distance and members."""
    table = Table()
    for col, justify in (("#", "right"), ("images", "right"), ("similarity", "right"), ("bits", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    table.add_column("members")
    for n, group in enumerate(groups[:SHOWN], 1):
        span = f"{group.min_similarity:.3f}-{group.max_similarity:.3f}"
        bits = "-" if group.max_hash_distance is None else str(group.max_hash_distance)
        table.add_row(str(n), str(len(group.ids)), span, bits, markup_safe(", ".join(group.ids)))
    return table


def _duplicates(args: argparse.Namespace) -> int:
    from core.data.records import load_dataset
    from core.models.loading import load_model
    from core.search.duplicates import dataset_duplicates

    data = load_dataset(dataset_of(args))
    lm = load_model(model_of(args), args.pretrained, device=args.device)
    splits = None if args.split == "all" else [args.split]
    with RichReporter() as reporter:
        found = dataset_duplicates(
            lm, data, splits, reporter=reporter, rule=rule_of(args), hashed=not args.embeddings_only
        )
    if args.json:
        print(json_text(found.to_dict(), indent=2))
        return 0
    out = Console()
    grouped = sum(len(g.ids) for g in found.groups)
    out.print(
        f"[bold]{markup_safe(data.name)}[/]: {len(found.groups):,} groups of near-duplicates "
        f"({grouped:,} of {found.images:,} images) by {markup_safe(found.model_id)}: "
        + describe_rule(found.applied, found.hashed),
        soft_wrap=True,
        highlight=False,
    )
    if found.groups:
        out.print(groups_table(found.groups))
    if len(found.groups) > SHOWN:
        out.print(f"[dim]... and {len(found.groups) - SHOWN:,} more (--json lists them all)[/]")
    return 0
