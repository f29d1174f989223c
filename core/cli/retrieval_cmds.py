"""CLI commands for embedding, indexing, evaluation and search."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from core.cli.console import RichReporter, add_command, console
from core.cli.embed_cmd import register_embed
from core.cli.options import add_common_options, dataset_of, model_of
from core.errors import CapsearchError
from core.index.vector_index import KINDS, IndexSpec

DIRECTIONS = ("text-image", "image-text", "image-image", "text-text")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``embed``, ``index``, ``eval`` and ``search``."""
    register_embed(sub)
    _register_index(sub)
    _register_eval(sub)
    _register_search(sub)


# -- shared options ---------------------------------------------------------------------------------------
def _add_hnsw(parser: argparse.ArgumentParser) -> None:
    default = IndexSpec()
    parser.add_argument("--m", type=int, default=default.m, help=f"HNSW M (default {default.m})")
    parser.add_argument(
        "--ef-construction",
        type=int,
        default=default.ef_construction,
        help=f"HNSW efConstruction (default {default.ef_construction})",
    )
    parser.add_argument(
        "--ef-search",
        type=int,
        default=default.ef_search,
        help=f"HNSW efSearch (default {default.ef_search})",
    )


def _spec(args: argparse.Namespace, kind: str) -> IndexSpec:
    return IndexSpec(kind=kind, m=args.m, ef_construction=args.ef_construction, ef_search=args.ef_search)  # type: ignore[arg-type]


# -- index --------------------------------------------------------------------------------------------------
def _register_index(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub, "index", _index, help="build (or reuse) the FAISS indexes of a split's images and captions"
    )
    add_common_options(parser)
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="auto",
        help="exact (IndexFlatIP), hnsw (IndexHNSWFlat) or auto (exact for small collections)",
    )
    _add_hnsw(parser)


def _index(args: argparse.Namespace) -> int:
    from core.data.records import load_dataset
    from core.embed.cache import split_embeddings
    from core.index.store import cached_index, index_dir
    from core.models.loading import load_model
    from core.search.retriever import caption_ids

    spec = _spec(args, args.kind)
    data = load_dataset(dataset_of(args))
    lm = load_model(model_of(args), args.pretrained, device=args.device)
    table = Table(title=f"indexes of {data.name}/{args.split} for {lm.model_id}")
    for column in ("side", "kind", "params", "vectors", "dim", "build s", "size", "cache", "folder"):
        table.add_column(
            column, justify="right" if column in ("vectors", "dim", "build s", "size") else "left"
        )
    with RichReporter() as reporter:
        emb = split_embeddings(lm, data, args.split, reporter=reporter)
        sides = [("images", emb.image_emb, [r.id for r in emb.records])]
        if len(emb.captions):
            sides.append(("captions", emb.caption_emb, caption_ids(emb.records, emb.caption_image)))
        for side, vectors, ids in sides:
            index, reused = cached_index(
                vectors, ids, lm.model_id, data.name, args.split, side, spec, reporter, lm.precision
            )
            params = ", ".join(f"{k}={v}" for k, v in index.spec.params().items()) or "-"
            folder = index_dir(lm.model_id, data.name, args.split, side, index.spec, lm.precision)
            table.add_row(
                side,
                index.kind,
                params,
                str(index.count),
                str(index.dim),
                f"{index.build_seconds:.3f}",
                f"{index.nbytes / 2**20:.2f} MiB",
                "reused" if reused else "built",
                str(folder),
            )
    Console().print(table)
    return 0


# -- eval ---------------------------------------------------------------------------------------------------
def _register_eval(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub, "eval", _eval, help="Recall@K both ways, ranks and query latency; writes results JSON"
    )
    add_common_options(parser)
    parser.add_argument(
        "--index",
        choices=("exact", "hnsw", "both", "auto"),
        default="exact",
        help="search through the exact index, HNSW, or both (default exact)",
    )
    parser.add_argument(
        "-k", type=int, nargs="+", default=[1, 5, 10], metavar="K", help="K values (default 1 5 10)"
    )
    parser.add_argument(
        "--latency-queries", type=int, default=50, help="captions timed as queries (default 50)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the results JSON (without per-query ranks) to stdout"
    )
    _add_hnsw(parser)


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _eval(args: argparse.Namespace) -> int:
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
            hnsw=_spec(args, "hnsw"),
            latency_queries=args.latency_queries,
            device=args.device,
        )
    payload = result.payload
    if args.json:
        summary = {k: v for k, v in payload.items() if k not in ("per_query", "caption_image")}
        print(json.dumps({**summary, "path": str(result.path)}, indent=2))
        return 0
    ks = payload["ks"]
    counts = payload["counts"]
    table = Table(
        title=f"{payload['model_id']} on {payload['dataset']}/{payload['split']} "
        f"({counts['images']} images, {counts['captions']} captions)"
    )
    for column in ("index", "direction", *[f"R@{k}" for k in ks], "median rank", "mean rank"):
        table.add_column(column, justify="left" if column in ("index", "direction") else "right")
    for name, metrics in payload["metrics"].items():
        for direction, values in metrics.items():
            table.add_row(
                name,
                direction.replace("_to_", " → "),
                *[_fmt(values[f"R@{k}"]) for k in ks],
                _fmt(values["median_rank"], 1),
                _fmt(values["mean_rank"], 1),
            )
    out = Console()
    out.print(table)
    for name, vs in payload["recall_vs_exact"].items():
        out.print(
            f"{name} recall@{vs['k']} vs exact: text→image {vs['text_to_image']:.2f}%, "
            f"image→text {vs['image_to_text']:.2f}%"
        )
    latency = payload["timings"].get("latency") or {}
    if latency:
        parts = [f"encode p50 {latency['encode_ms']['p50']:.2f} / p95 {latency['encode_ms']['p95']:.2f} ms"]
        for name in payload["metrics"]:
            search = latency[name]["search_ms"]
            parts.append(f"{name} search p50 {search['p50']:.3f} / p95 {search['p95']:.3f} ms")
        out.print("query latency: " + "; ".join(parts))
    timings = payload["timings"]
    out.print(f"embeddings {timings['embed_s']:.2f} s, total {timings['total_s']:.2f} s")
    out.print(f"results: {result.path}")
    return 0


# -- search -------------------------------------------------------------------------------------------------
def _register_search(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
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
    add_common_options(parser)
    parser.add_argument("--image", help="an image file or dataset image id to search with")
    parser.add_argument(
        "--direction",
        choices=DIRECTIONS,
        help="text-image (default for text), image-image (default with --image alone), "
        "image-text or text-text",
    )
    parser.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    parser.add_argument("--index", choices=KINDS, default="auto", help="index kind (default auto)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the hits as JSON to stdout")
    output.add_argument(
        "--paths", action="store_true", help="print only image paths, one per line (for pipes)"
    )


def _search(args: argparse.Namespace) -> int:
    from core.search.retriever import Retriever

    direction = args.direction or ("image-image" if args.image and not args.query else "text-image")
    if args.k < 1:
        raise CapsearchError(f"-k must be at least 1, got {args.k}")
    if direction.startswith("text"):
        if not args.query:
            raise CapsearchError(
                f"{direction} search needs a text query", hint='e.g. capsearch search "a dog in the snow"'
            )
        query = f'{args.query} + "{args.image}"' if args.image else args.query
    else:
        query = args.image or args.query
        if not query:
            raise CapsearchError(
                f"{direction} search needs an image", hint="pass --image PATH or a dataset image id"
            )
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
    search = {
        "text-image": retriever.search_text,
        "text-text": retriever.text_to_text,
        "image-text": retriever.image_to_text,
        "image-image": retriever.image_to_image,
    }[direction]
    hits = search(query, args.k)
    truth = retriever.ground_truth(query) if direction == "text-image" else None

    if args.paths:
        for hit in hits:
            print(hit.path)
        return 0
    if args.json:
        print(
            json.dumps(
                {
                    "query": query,
                    "direction": direction,
                    "model_id": retriever.model_id,
                    "dataset": retriever.dataset,
                    "split": retriever.split,
                    "index": retriever.index_kind
                    if direction.endswith("image")
                    else retriever.caption_index.kind,
                    "k": args.k,
                    "hits": [
                        {
                            "rank": h.rank,
                            "score": round(h.score, 6),
                            "id": h.record.id,
                            "path": str(h.path),
                            "caption": h.caption,
                            "caption_index": h.caption_index,
                        }
                        for h in hits
                    ],
                    "ground_truth": {
                        "id": truth[0].id,
                        "rank": truth[1],
                        "path": str(retriever.image_path(truth[0])),
                    }
                    if truth
                    else None,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    table = Table(
        title=f"{direction}: {query}  ({retriever.model_id}, {retriever.dataset}/{retriever.split})"
    )
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("image")
    if direction.endswith("text"):
        table.add_column("caption")
    table.add_column("path", overflow="fold")
    for hit in hits:
        cells = [str(hit.rank), f"{hit.score:.4f}", hit.record.id]
        if direction.endswith("text"):
            cells.append(hit.caption or "")
        table.add_row(*cells, str(hit.path))
    out = Console()
    out.print(table)
    if truth:
        out.print(f"ground truth: {truth[0].id} at rank {truth[1]} of {retriever.size}")
    if not hits:
        console.print("[yellow]no results[/]")
    return 0
