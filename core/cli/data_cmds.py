"""CLI commands for datasets: ``prepare flickr8k|folder|synthetic`` and ``datasets``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich_argparse import RawDescriptionRichHelpFormatter

from core.cli.console import RichReporter, add_command
from core.cli.numbers import count
from core.data.flickr8k import SCHEMES, download_flickr8k
from core.data.prepare import prepare_flickr8k, prepare_folder, prepare_synthetic
from core.data.records import REPORT_FILE, SPLITS, PreparedDataset, list_datasets
from core.data.splits import DEFAULT_RATIOS, parse_ratios
from core.errors import CapsearchError, DatasetError
from core.paths import datasets_dir
from core.progress import Reporter
from core.safe_text import json_text

out_console = Console()

PREPARE_DESCRIPTION = """\
Ingest a captioned image collection, validate every file, split it and write the prepared dataset
(train/val/test.jsonl, dataset.json, report.txt) under artifacts/datasets/<name>/.

Problems (unreadable images, bad caption lines, missing files, ...) never stop the run: each is listed
with its file and line in report.txt and counted in the summary. Sources are never modified, and
preparing the same inputs twice gives byte-identical files.

  capsearch prepare synthetic                       # built-in captioned scenes (offline demo)
  capsearch prepare flickr8k /path/to/flickr8k
  capsearch prepare flickr8k Flickr8k.zip --name flickr8k-zip
  capsearch prepare folder ~/photos                 # uncaptioned: a text-to-image search gallery
  capsearch prepare folder ./pets --captions pets.jsonl
"""

# The sources of ``prepare``: their one-line help and their description.
SOURCE_HELP = {
    "flickr8k": "Flickr8k from its folder or .zip",
    "folder": "any folder of images, captioned or not",
    "synthetic": "the built-in captioned scenes (offline demo)",
}
SOURCE_DESCRIPTION = {
    "flickr8k": "Prepare Flickr8k from a folder or a .zip holding the images and Flickr8k.token.txt "
    "(image#n<TAB>caption) or captions.txt (token format or the image,caption CSV). With the official "
    "lists Flickr_8k.{train,dev,test}Images.txt the official 6000/1000/1000 split is used; without them a "
    "seeded random split by image. A zip is read, never modified: it is extracted once into "
    "artifacts/cache/archives/.",
    "folder": "Prepare a folder of images (subfolders walked; images recognised by content, not only by "
    "extension). With --captions, a seeded random split of the captioned images; without, every image goes "
    "to the 'test' split as a text-to-image search gallery. Image ids are paths without extension.",
    "synthetic": "Generate the built-in captioned scenes: 128x128 drawings of 1-3 shapes (shape, colour, size, "
    "position) on a coloured background, 5 differently worded captions each, about a quarter of them "
    "one-attribute near-duplicates of another scene. Deterministic in --seed; split 70/15/15 at random.",
}


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        return parse_ratios(text)
    except CapsearchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _add_output_options(parser: argparse.ArgumentParser, default_name: str | None) -> None:
    name_help = (
        f"dataset name, used by the other commands (default: {default_name})"
        if default_name
        else "dataset name, used by the other commands (default: the folder's name)"
    )
    parser.add_argument("--name", default=default_name, help=name_help)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: artifacts/datasets/<name>; not inside the source)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print dataset.json to stdout instead of the summary table"
    )


def _add_split_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ratios",
        type=_ratios,
        default=DEFAULT_RATIOS,
        metavar="TRAIN,VAL,TEST",
        help="fractions for the seeded random split by image (default: 0.7,0.15,0.15; rounded by largest remainder)",
    )
    parser.add_argument("--seed", type=count(0), default=42, help="seed of the random split (default: 42)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``prepare`` (with ``flickr8k``, ``folder``, ``synthetic``) and ``datasets``."""
    prepare = sub.add_parser(
        "prepare",
        help="ingest, validate and split a dataset (flickr8k, folder, synthetic)",
        description=PREPARE_DESCRIPTION,
        formatter_class=RawDescriptionRichHelpFormatter,
    )
    prepare.set_defaults(handler=lambda _args: _print_help(prepare))
    kinds = prepare.add_subparsers(dest="source_kind", metavar="SOURCE")
    for kind, handler, add_arguments in (
        ("flickr8k", _prepare_flickr8k, _add_flickr8k_arguments),
        ("folder", _prepare_folder, _add_folder_arguments),
        ("synthetic", _prepare_synthetic, _add_synthetic_arguments),
    ):
        add_arguments(add_command(kinds, kind, handler, SOURCE_HELP[kind], SOURCE_DESCRIPTION[kind]))
    p = add_command(sub, "datasets", _datasets, help="list the prepared datasets")
    p.add_argument("--json", action="store_true", help="print every dataset.json as a JSON list to stdout")


def _add_flickr8k_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source", type=Path, nargs="?", help="Flickr8k folder or .zip (with --download: where to save)"
    )
    _add_output_options(p, "flickr8k")
    _add_split_options(p)
    p.add_argument(
        "--split-scheme",
        choices=SCHEMES,
        default="auto",
        help="auto: the official lists when all three exist, else random; official: require the lists; "
        "random: ignore them and use --ratios/--seed (default: auto)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="first fetch the public Flickr8k archives (~1 GB) into SOURCE (default: artifacts/downloads/flickr8k); "
        "needs a network, so it is untested on offline machines",
    )


def _add_folder_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", type=Path, help="folder holding the images")
    p.add_argument(
        "--captions",
        type=Path,
        default=None,
        help='captions file: JSONL {"image": ..., "captions": [...]}, CSV with an image,caption header, or '
        "image#n<TAB>caption lines; image paths are relative to the folder",
    )
    _add_output_options(p, None)
    _add_split_options(p)


def _add_synthetic_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=count(1), default=1000, help="number of images (default: 1000)")
    p.add_argument(
        "--seed", type=count(0), default=0, help="seed of the scenes and of the split (default: 0)"
    )
    _add_output_options(p, "synthetic")


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _prepare_flickr8k(args: argparse.Namespace) -> int:
    with RichReporter() as reporter:
        source = args.source
        if args.download:
            source = download_flickr8k(args.source, reporter)
        elif source is None:
            raise DatasetError(
                "no Flickr8k folder or zip given", hint="pass its path, or --download to fetch it"
            )
        ds = _prepare_split(prepare_flickr8k, source, args, reporter, scheme=args.split_scheme)
    return _summarise(ds, args.json)


def _prepare_folder(args: argparse.Namespace) -> int:
    with RichReporter() as reporter:
        ds = _prepare_split(prepare_folder, args.source, args, reporter, captions=args.captions)
    return _summarise(ds, args.json)


def _prepare_split(
    prepare: Callable[..., PreparedDataset],
    source: Path,
    args: argparse.Namespace,
    reporter: Reporter,
    **options: Any,
) -> PreparedDataset:
    """``prepare`` (``prepare_flickr8k`` or ``prepare_folder``) of ``source`` with the options that
    :func:`_add_output_options` and :func:`_add_split_options` added, and that source's own ``options``."""
    return prepare(
        source, out=args.out, name=args.name, ratios=args.ratios, seed=args.seed, reporter=reporter, **options
    )


def _prepare_synthetic(args: argparse.Namespace) -> int:
    with RichReporter() as reporter:
        ds = prepare_synthetic(n=args.n, seed=args.seed, out=args.out, name=args.name, reporter=reporter)
    return _summarise(ds, args.json)


def _summarise(ds: PreparedDataset, as_json: bool) -> int:
    if as_json:
        print(json_text(ds.meta, indent=2, sort_keys=True))
        return 0
    meta = ds.meta
    out_console.print(
        f"[bold]{ds.name}[/]: {meta['images']:,} images, {meta['captions']:,} captions, "
        f"{meta['split_scheme']} split",
        highlight=False,
    )
    table = Table()
    for col in ("split", "images", "captions"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split in SPLITS:
        counts = meta["splits"][split]
        table.add_row(split, f"{counts['images']:,}", f"{counts['captions']:,}")
    if meta.get("unassigned"):
        table.add_row("[dim]in no split[/]", f"[dim]{meta['unassigned']:,}[/]", "")
    out_console.print(table)
    problems = meta["problems"]
    colour = "green" if problems == 0 else "yellow"
    kinds = ", ".join(f"{k} {n}" for k, n in meta.get("problem_kinds", {}).items())
    out_console.print(
        f"[{colour}]problems: {problems}[/]" + (f" ({kinds})" if kinds else ""), highlight=False
    )
    out_console.print(
        f"written to {ds.dir} (report: {ds.dir / REPORT_FILE})", highlight=False, soft_wrap=True
    )
    return 0


def _datasets(args: argparse.Namespace) -> int:
    found = list_datasets()
    if args.json:
        print(json_text([ds.meta for ds in found], indent=2, sort_keys=True))
        return 0
    if not found:
        out_console.print(f"no prepared datasets under {datasets_dir()}; try `capsearch prepare synthetic`")
        return 0
    table = Table(
        title=f"prepared datasets in {datasets_dir()}", caption="split columns: images", box=box.SIMPLE_HEAD
    )
    table.add_column("name", no_wrap=True)
    table.add_column("split", no_wrap=True)
    for col in (*SPLITS, "captions", "problems"):
        table.add_column(col, justify="right")
    for ds in found:
        meta = ds.meta
        splits = meta.get("splits", {})
        table.add_row(
            ds.name,
            str(meta.get("split_scheme", "?")),
            *(f"{splits.get(s, {}).get('images', 0):,}" for s in SPLITS),
            f"{meta.get('captions', 0):,}",
            str(meta.get("problems", "?")),
        )
    out_console.print(table)
    return 0
