"""CLI commands for embedding, indexing, evaluation and search."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from core.cli.console import Handler, RichReporter, add_command, console, print_paths
from core.cli.embed_cmd import register_embed
from core.cli.index_options import add_index_options, index_spec
from core.cli.library_cmds import add_library_search_options, library_requested, search_library
from core.cli.numbers import count
from core.cli.options import add_common_options, dataset_of, model_of
from core.directions import EVALUATED, Direction
from core.errors import CapsearchError
from core.index.kind_base import IndexSpec
from core.index.registry import CHOICES as KINDS
from core.safe_text import json_text, markup_safe

if TYPE_CHECKING:
    from core.data.records import ImageRecord
    from core.evaluation.results import EvalResult
    from core.search.retriever import Hit, Retriever

SEARCH_DIRECTIONS = (
    Direction.TEXT_TO_IMAGE.cli,
    Direction.IMAGE_TO_TEXT.cli,
    Direction.IMAGE_TO_IMAGE.cli,
    Direction.TEXT_TO_TEXT.cli,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``embed``, ``index``, ``eval`` and ``search``."""
    register_embed(sub)
    _register_index(sub)
    _register_eval(sub)
    _register_search(sub)


# -- shared options ---------------------------------------------------------------------------------------
def _split_command(
    sub: argparse._SubParsersAction,
    name: str,
    handler: Handler,
    help: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """A command over a dataset split: :func:`add_command` with :func:`add_common_options`."""
    parser = add_command(sub, name, handler, help=help, description=description)
    add_common_options(parser)
    return parser


def _spec(args: argparse.Namespace, kind: str) -> IndexSpec:
    return index_spec(args, kind)


# -- index --------------------------------------------------------------------------------------------------
def _register_index(sub: argparse._SubParsersAction) -> None:
    parser = _split_command(
        sub, "index", _index, help="build (or reuse) the FAISS indexes of a split's images and captions"
    )
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="auto",
        help="index kind (default auto: chosen by vector count and --max-index-memory, knob tuned to "
        "--target-recall); see the README's 'Index kinds'",
    )
    add_index_options(parser)


def _index(args: argparse.Namespace) -> int:
    from core.data.records import load_dataset
    from core.index.split_indexes import split_indexes
    from core.index.store import IndexKey
    from core.models.loading import load_model

    spec = _spec(args, args.kind)
    data = load_dataset(dataset_of(args))
    lm = load_model(model_of(args), args.pretrained, device=args.device)
    table = Table(title=markup_safe(f"indexes of {data.name}/{args.split} for {lm.model_id}"))
    for column in ("side", "kind", "params", "vectors", "dim", "build s", "size", "cache", "folder"):
        table.add_column(
            column, justify="right" if column in ("vectors", "dim", "build s", "size") else "left"
        )
    with RichReporter() as reporter:
        indexes = split_indexes(lm, data, args.split, spec, reporter)
    for side, built in indexes.sides().items():
        index = built.index
        params = ", ".join(f"{k}={v}" for k, v in index.spec.params().items()) or "-"
        folder = IndexKey(lm.model_id, data.name, args.split, side, lm.precision).folder(index.spec)
        table.add_row(
            side,
            index.kind,
            params,
            str(index.count),
            str(index.dim),
            f"{index.build_seconds:.3f}",
            f"{index.nbytes / 2**20:.2f} MiB",
            "reused" if built.reused else "built",
            markup_safe(folder),
        )
    Console().print(table)
    return 0


# -- eval ---------------------------------------------------------------------------------------------------
def _register_eval(sub: argparse._SubParsersAction) -> None:
    parser = _split_command(
        sub, "eval", _eval, help="Recall@K both ways, ranks and query latency; writes results JSON"
    )
    parser.add_argument(
        "--index",
        "--kind",
        dest="index",
        choices=("both", *KINDS),
        default="exact",
        help="search through this index kind, or both (exact and hnsw) (default exact)",
    )
    parser.add_argument(
        "-k", type=count(1), nargs="+", default=[1, 5, 10], metavar="K", help="K values (default 1 5 10)"
    )
    parser.add_argument(
        "--latency-queries", type=count(0), default=50, help="captions timed as queries (default 50)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the results JSON (without per-query ranks) to stdout"
    )
    add_index_options(parser)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _eval(args: argparse.Namespace) -> int:
    from core.evaluation.results import ranks_path, save_result
    from core.evaluation.runner import run_eval

    with RichReporter() as reporter:
        result = run_eval(
            dataset_of(args),
            args.split,
            model_of(args),
            pretrained=args.pretrained,
            index=args.index,
            ks=args.k,
            reporter=reporter,
            hnsw=_spec(args, "hnsw" if args.index == "both" else args.index),
            latency_queries=args.latency_queries,
            device=args.device,
        )
    path = save_result(result)
    if args.json:
        summary = {**result.to_json(), "ranks_file": ranks_path(path).name, "path": str(path)}
        print(json_text(summary, indent=2))
        return 0
    out = Console()
    out.print(_metrics_table(result))
    for line in _speed_lines(result):
        out.print(line)
    out.print(f"results: {markup_safe(path)}")
    return 0


def _metrics_table(result: EvalResult) -> Table:
    """One row per index and direction: R@K, median and mean rank."""
    ks, counts = result.ks, result.counts
    table = Table(
        title=f"{result.model_id} on {result.dataset}/{result.split} "
        f"({counts.images} images, {counts.captions} captions)"
    )
    for column in ("index", "direction", *[f"R@{k}" for k in ks], "median rank", "mean rank"):
        table.add_column(column, justify="left" if column in ("index", "direction") else "right")
    for name, metrics in result.by_index.items():
        for direction in EVALUATED:
            values = metrics[direction]
            table.add_row(
                name,
                direction.label,
                *[_fmt(values[f"R@{k}"]) for k in ks],
                _fmt(values["median_rank"], 1),
                _fmt(values["mean_rank"], 1),
            )
    return table


def _speed_lines(result: EvalResult) -> list[str]:
    """HNSW recall against exact, query latency and the run's timings, a line each."""
    lines = [
        f"{name} recall@{vs.k} vs exact: text→image {vs.text_to_image:.2f}%, "
        f"image→text {vs.image_to_text:.2f}%"
        for name, vs in result.recall_vs_exact.items()
    ]
    timings = result.timings
    latency = timings.latency
    if latency:
        encode = latency.encode_ms
        parts = [f"encode p50 {encode['p50']:.2f} / p95 {encode['p95']:.2f} ms"]
        for name in result.by_index:
            search = latency.by_index[name].search_ms
            parts.append(f"{name} search p50 {search['p50']:.3f} / p95 {search['p95']:.3f} ms")
        lines.append("query latency: " + "; ".join(parts))
    lines.append(f"embeddings {timings.embed_s:.2f} s, total {timings.total_s:.2f} s")
    return lines


# -- search -------------------------------------------------------------------------------------------------
def _register_search(sub: argparse._SubParsersAction) -> None:
    parser = _split_command(
        sub,
        "search",
        _search,
        help="search a dataset split by text or image",
        description="search a dataset split by text or image; text queries support arithmetic such as "
        '"dog + snow - night" and weights such as "2:dog + -0.5:night"; a term that is an image '
        "file or a dataset image id is embedded as an image",
    )
    parser.add_argument(
        "query", nargs="?", help="the text query (or, for image-* directions, an image path or id)"
    )
    parser.add_argument("--image", help="an image file or dataset image id to search with")
    parser.add_argument(
        "--direction",
        choices=SEARCH_DIRECTIONS,
        help="text-image (default for text), image-image (default with --image alone), "
        "image-text or text-text",
    )
    parser.add_argument("-k", type=count(1), default=10, help="number of results (default 10)")
    parser.add_argument("--index", choices=KINDS, default="auto", help="index kind (default auto)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the hits as JSON to stdout")
    output.add_argument(
        "--paths", action="store_true", help="print only image paths, one per line (for pipes)"
    )
    output.add_argument(
        "--paths0", action="store_true", help="print only image paths, each ended by a NUL byte (xargs -0)"
    )
    add_library_search_options(parser)


def _search_query(args: argparse.Namespace, direction: Direction) -> str:
    """The query of a ``direction`` search: the text (with ``--image`` as a term) or the image."""
    if direction.query == "text":
        if not args.query:
            raise CapsearchError(
                f"{direction.cli} search needs a text query", hint='e.g. capsearch search "a dog in the snow"'
            )
        return f'{args.query} + "{args.image}"' if args.image else args.query
    query = args.image or args.query
    if not query:
        raise CapsearchError(
            f"{direction.cli} search needs an image", hint="pass --image PATH or a dataset image id"
        )
    return str(query)


def _search(args: argparse.Namespace) -> int:
    from core.search.output import search_json
    from core.search.retriever import Retriever

    if args.direction:
        direction = Direction.from_cli(args.direction)
    else:
        direction = Direction.IMAGE_TO_IMAGE if args.image and not args.query else Direction.TEXT_TO_IMAGE
    if args.k < 1:
        raise CapsearchError(f"-k must be at least 1, got {args.k}")
    query = _search_query(args, direction)
    if library_requested(args):
        if direction.target == "text":
            raise CapsearchError(f"a library has no captions: {direction.cli} search needs a --dataset")
        return search_library(args, direction is Direction.IMAGE_TO_IMAGE, query)
    with RichReporter() as reporter:
        retriever = Retriever.open(
            dataset_of(args),
            model_of(args),
            pretrained=args.pretrained,
            split=args.split,
            index=args.index,
            reporter=reporter,
            device=args.device,
        )
    hits = retriever.search(direction, query, args.k)
    truth = retriever.ground_truth(query) if direction is Direction.TEXT_TO_IMAGE else None
    if args.paths or args.paths0:
        print_paths((hit.path for hit in hits), nul=args.paths0)
    elif args.json:
        print(json_text(search_json(retriever, direction, query, args.k, hits, truth), indent=2))
    else:
        _print_hits(retriever, direction, query, hits, truth)
    return 0


def _print_hits(
    retriever: Retriever,
    direction: Direction,
    query: str,
    hits: list[Hit],
    truth: tuple[ImageRecord, int] | None,
) -> None:
    table = Table(
        title=markup_safe(
            f"{direction.cli}: {query}  ({retriever.model_id}, {retriever.dataset}/{retriever.split})"
        )
    )
    captions = direction.target == "text"
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("image")
    if captions:
        table.add_column("caption")
    table.add_column("path", overflow="fold")
    for hit in hits:
        cells = [str(hit.rank), f"{hit.score:.4f}", hit.record.id]
        if captions:
            cells.append(hit.caption or "")
        table.add_row(*(markup_safe(c) for c in (*cells, str(hit.path))))
    out = Console()
    out.print(table)
    if truth:
        out.print(f"ground truth: {markup_safe(truth[0].id)} at rank {truth[1]} of {retriever.size}")
    if not hits:
        console.print("[yellow]no results[/]")
