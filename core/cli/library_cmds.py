"""``capsearch library add|update|status|list|remove`` and searching a library from ``capsearch search``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from core.cli.console import RichReporter, add_command, console, print_format_note, print_paths
from core.cli.duplicates_cmd import SHOWN, add_rule_options, describe_rule, groups_table, rule_of
from core.cli.numbers import count
from core.cli.options import BACKEND_CHOICES, PRECISION_CHOICES
from core.errors import CapsearchError
from core.safe_text import json_text, markup_safe

if TYPE_CHECKING:
    from core.embed.engine import ImageBatch
    from core.library.catalogue import ModelKey
    from core.library.filters import Filters
    from core.library.library import Library
    from core.library.update import ImageEncoder, UpdateStats
    from core.models.loading import LoadedModel
    from core.progress import Reporter
    from core.search.library_search import LibraryHit, LibrarySearcher

DEFAULT_NAME = "photos"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``library`` and its subcommands."""
    parser = sub.add_parser(
        "library",
        help="photo libraries: folders indexed incrementally, searched by `capsearch search`",
        description="a library is a growing photo collection: a rescan embeds only new or changed files, "
        "moves and copies reuse their vectors, and `capsearch search` uses the default library",
    )
    commands = parser.add_subparsers(dest="library_command", metavar="COMMAND", required=True)
    add = add_command(commands, "add", _add, help="create a library or add folders to one, then index it")
    add.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="folders of photos")
    add.add_argument("--name", help=f"library name (default: the default library, else {DEFAULT_NAME!r})")
    add.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="X",
        help="a folder or a glob (matched on names and paths under a root) to skip; repeatable",
    )
    add.add_argument("--index", choices=("auto", "exact", "hnsw"), help="index kind (default auto)")
    _embed_options(add)
    update = add_command(commands, "update", _update, help="rescan a library: embed what is new or changed")
    update.add_argument("name", nargs="?", help="library name (default: the default library)")
    _embed_options(update)
    status = add_command(commands, "status", _status, help="a library's roots, counts, model and index")
    status.add_argument("name", nargs="?", help="library name (default: the default library)")
    add_command(commands, "list", _list, help="every library, the default marked")
    remove = add_command(
        commands, "remove", _remove, help="delete a library's catalogue, vectors and index (never photos)"
    )
    remove.add_argument("name", help="library name")
    dups = add_command(
        commands, "duplicates", _duplicates, help="group near-identical photos of a library (no chaining)"
    )
    dups.add_argument("name", nargs="?", help="library name (default: the default library)")
    add_rule_options(dups)
    dups.add_argument("--json", action="store_true", help="print every group as JSON to stdout")


def _embed_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        help="model to embed with (default: the library's model, else the best trained offline model); "
        "another model is filled in while the old vectors keep serving searches",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        help="inference precision (default: the library's, else fast)",
    )
    parser.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--batch-size", type=count(1), default=32, help="images per batch (default 32)")
    parser.add_argument("--watch", action="store_true", help="keep the library current until Ctrl+C")
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (the default); ray: an actor pool on a Ray cluster (same vectors; "
        "needs pip install 'capsearch\\[ray]')",
    )
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="torch",
        help="image backend of the local engine: torch (the default) or openvino (faster on some CPUs; "
        "needs pip install 'capsearch\\[openvino]')",
    )
    parser.add_argument(
        "--address", help="with --engine ray: auto (the running cluster) or HOST:PORT (default: a local Ray)"
    )


# -- add / update -------------------------------------------------------------------------------------------
def _add(args: argparse.Namespace) -> int:
    from core.library.home import check_name, default_library
    from core.library.library import add_folders

    name = check_name(args.name or default_library() or DEFAULT_NAME)
    if args.backend != "torch":
        from core.embed.openvino_backend import import_openvino

        import_openvino()  # a missing OpenVINO is said before the library is made
    lib = add_folders(name, args.paths, args.exclude, args.index)
    return _run_update(lib, args)


def _update(args: argparse.Namespace) -> int:
    from core.library.home import resolve_library
    from core.library.library import Library

    return _run_update(Library.open(resolve_library(args.name)), args)


def _model(lib: Library, args: argparse.Namespace) -> tuple[LoadedModel, ModelKey]:
    """The model to embed with: ``--model``, else the library's target, else the library default."""
    from core.library.library import model_key
    from core.library.models import LIBRARY_PRECISION, default_library_model
    from core.models.loading import load_model

    current = lib.target
    name = args.model or (current.name if current else None) or default_library_model(console.print)
    precision = args.precision or (current.precision if current and not args.model else LIBRARY_PRECISION)
    lm = load_model(name, device=args.device, precision=precision)
    print_format_note(lm, args.precision)
    return lm, model_key(name, lm)


class _ModelChanged(Exception):
    """The library's model, once loaded, keys its vectors differently (its file or this CPU changed)."""

    def __init__(self, lm: LoadedModel, model: ModelKey) -> None:
        super().__init__(model.key)
        self.lm, self.model = lm, model


@dataclass
class _LoadOnFirstBatch:
    """This process's engine with the library's own model (its vectors keyed ``key``), loaded when the first
    file needs embedding: a rescan that finds nothing new loads no model (importing torch and loading
    weights take seconds)."""

    lib: Library
    args: argparse.Namespace
    key: str
    load_s: float | None = None

    def __call__(
        self, paths: list[Path], batch_size: int, reporter: Reporter | None = None
    ) -> Iterable[ImageBatch]:
        start = time.perf_counter()  # importing the engine is part of the wait
        from core.embed.engine import iter_image_batches

        lm, model = _model(self.lib, self.args)
        self.load_s = time.perf_counter() - start
        if model.key != self.key:
            raise _ModelChanged(lm, model)
        return iter_image_batches(lm, paths, batch_size, reporter=reporter)


def _loads_on_demand(args: argparse.Namespace) -> bool:
    """Whether this update embeds with the library's own model in this process, so the model can wait."""
    asked_other = args.model or args.precision or args.watch
    return not asked_other and args.engine == "local" and args.backend == "torch"


def _encoder(args: argparse.Namespace, lm: LoadedModel, model: ModelKey) -> ImageEncoder | None:
    """With ``--engine ray``, the Ray engine's image batches for this model; with ``--backend openvino``,
    this process's batches on OpenVINO; else None (this process, torch)."""
    if args.engine != "ray":
        if args.address:
            raise CapsearchError("--address applies to --engine ray", hint="add --engine ray")
        if args.backend == "torch":
            return None
        from core.embed.engine import iter_image_batches
        from core.embed.openvino_backend import check_backend

        check_backend(lm, args.backend)  # a missing OpenVINO is said before the scan
        return partial(iter_image_batches, lm, backend=args.backend)
    if args.backend != "torch":
        raise CapsearchError("--backend openvino applies to --engine local", hint="drop --engine ray")
    from core.embed.ray_engine import ModelSpec, RayOptions, import_ray, ray_image_batches

    import_ray()  # a missing Ray is said before the scan
    options = RayOptions(address=args.address, batch_size=args.batch_size)
    return partial(ray_image_batches, lm, ModelSpec.of(model.name, None, lm), options=options)


def _run_update(lib: Library, args: argparse.Namespace) -> int:
    from core.library.update import update
    from core.library.watch import watch

    with lib:
        target = lib.target
        if target is not None and _loads_on_demand(args):
            on_demand = _LoadOnFirstBatch(lib, args, target.key)
            try:
                with RichReporter() as reporter:
                    stats = update(lib, None, target, reporter, args.batch_size, on_demand)
                _print_stats(lib, stats, on_demand.load_s)
                return 0
            except _ModelChanged as changed:  # nothing was embedded yet: embed for the new key
                lm, model, load_s = changed.lm, changed.model, on_demand.load_s
                console.print(
                    f"{markup_safe(lib.name)}: {markup_safe(model.name)} now computes its vectors as "
                    f"{markup_safe(model.key)} (they were {markup_safe(target.key)}): embedding every photo "
                    "again; the counts below are of that pass (the files found are catalogued already)",
                    highlight=False,
                    soft_wrap=True,
                )
        else:
            start = time.perf_counter()
            lm, model = _model(lib, args)
            load_s = time.perf_counter() - start
        with RichReporter() as reporter:
            encode = _encoder(args, lm, model)
            stats = update(lib, lm, model, reporter, args.batch_size, encode)
        _print_stats(lib, stats, load_s)
        if args.watch:
            console.print(f"watching {len(lib.catalogue.roots())} folder(s) of {lib.name}; Ctrl+C stops")
            try:
                watch(
                    lib, lm, model, on_update=lambda s: _print_stats(lib, s, None),
                    batch_size=args.batch_size, encode=encode,
                )  # fmt: skip
            except KeyboardInterrupt:
                console.print("stopped watching")
    return 0


def _print_stats(lib: Library, stats: UpdateStats, load_s: float | None) -> None:
    parts = [
        f"{stats.files} files",
        f"{stats.new} new",
        f"{stats.changed} changed",
        f"{stats.gone} gone",
        f"{stats.embedded} embedded",
        f"{stats.unreadable + stats.failed} unreadable",
        f"{stats.indexed} indexed",
    ]
    timing = f"scan {stats.scan_s:.2f} s, hash {stats.hash_s:.2f} s, embed {stats.embed_s:.2f} s"
    if load_s is not None:
        timing = f"model {load_s:.2f} s, " + timing
    console.print(markup_safe(f"library {lib.name}: " + ", ".join(parts) + f" ({timing})"))


# -- status / list / remove ---------------------------------------------------------------------------------
def _status(args: argparse.Namespace) -> int:
    from core.library.home import resolve_library
    from core.library.library import Library, computed_in

    with Library.open(resolve_library(args.name)) as lib:
        active, target = lib.active, lib.target
        counts = lib.catalogue.counts(active.key if active else None)
        out = Console()
        out.print(f"library {markup_safe(lib.name)}  ({markup_safe(lib.folder)})")
        for root in lib.catalogue.roots():
            out.print(f"  root     {markup_safe(root)}")
        for pattern in lib.catalogue.excludes():
            out.print(f"  exclude  {markup_safe(pattern)}")
        out.print(
            f"  files {counts['files']}, contents {counts['contents']}, embedded {counts['embedded']}, "
            f"unreadable {counts['failed']}"
        )
        vectors = markup_safe(computed_in(active)) if active else "-"
        out.print(f"  model {markup_safe(active.model_id) if active else '-'} ({vectors})")
        if target is not None and active is not None and target.key != active.key:
            missing = len(lib.catalogue.missing_vectors(target.key))
            out.print(f"  switching to {markup_safe(target.model_id)}: {missing} contents still to embed")
        out.print(f"  index {lib.index_kind}, catalogue generation {lib.catalogue.generation}")
        for path, reason in lib.catalogue.failures(10):
            out.print(f"  unreadable {markup_safe(path)}: {markup_safe(reason)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from core.library.home import default_library, library_names
    from core.library.library import Library

    names = library_names()
    if not names:
        console.print("no libraries yet; make one with `capsearch library add PATH`")
        return 0
    default = default_library()
    table = Table(title="libraries")
    for column in ("", "name", "files", "embedded", "model", "roots"):
        table.add_column(column)
    for name in names:
        with Library.open(name) as lib:
            active = lib.active
            counts = lib.catalogue.counts(active.key if active else None)
            table.add_row(
                "*" if name == default else "",
                markup_safe(name),
                str(counts["files"]),
                str(counts["embedded"]),
                markup_safe(active.model_id if active else "-"),
                markup_safe(", ".join(lib.catalogue.roots())),
            )
    Console().print(table)
    return 0


def _remove(args: argparse.Namespace) -> int:
    from core.library.library import remove_library

    folder = remove_library(args.name)
    console.print(f"removed library {markup_safe(args.name)} ({markup_safe(folder)}); no photo was touched")
    return 0


def _duplicates(args: argparse.Namespace) -> int:
    from core.library.duplicates import library_duplicates
    from core.library.home import resolve_library
    from core.library.library import Library

    rule, hashed = rule_of(args), not args.embeddings_only
    with Library.open(resolve_library(args.name)) as lib, RichReporter() as reporter:
        found = library_duplicates(lib, rule, hashed, reporter)
    groups = found.groups
    if args.json:
        print(json_text(found.to_dict(), indent=2))
        return 0
    out = Console()
    grouped = sum(len(g.ids) for g in groups)
    out.print(
        f"library {markup_safe(lib.name)}: {len(groups):,} groups of near-duplicates ({grouped:,} of "
        f"{found.images:,} photos): " + describe_rule(rule, hashed),
        soft_wrap=True,
        highlight=False,
    )
    if groups:
        out.print(groups_table(groups))
    if len(groups) > SHOWN:
        out.print(f"[dim]... and {len(groups) - SHOWN:,} more (--json lists them all)[/]")
    return 0


# -- search -------------------------------------------------------------------------------------------------
def add_library_search_options(parser: argparse.ArgumentParser) -> None:
    """The options ``capsearch search`` takes for a library."""
    group = parser.add_argument_group(
        "library search (the default library when there is one and no --dataset)"
    )
    group.add_argument("--library", help="search this library (default: the default library)")
    group.add_argument("--after", help="taken on or after this date (EXIF, else file time): YYYY-MM-DD")
    group.add_argument("--before", help="taken before this date: YYYY-MM-DD")
    group.add_argument("--in", dest="in_folder", type=Path, metavar="FOLDER", help="only files under FOLDER")
    group.add_argument("--camera", help="only photos whose camera contains this text (case-insensitive)")
    group.add_argument(
        "--sort", choices=("score", "date"), default="score", help="order (date: newest first)"
    )
    group.add_argument("--min-score", type=float, help="drop hits scoring below this")
    group.add_argument(
        "--dedup", action="store_true", help="collapse near-duplicate photos to their best-scored one"
    )


def library_requested(args: argparse.Namespace) -> bool:
    """Whether ``capsearch search`` should search a library: ``--library``, or no ``--dataset`` while a
    default library exists."""
    if args.library:
        return True
    if args.dataset:
        given = [f"--{n.replace('_', '-')}" for n in ("after", "before", "in_folder", "camera", "min_score")]
        used = [
            flag
            for flag, n in zip(given, ("after", "before", "in_folder", "camera", "min_score"), strict=True)
            if getattr(args, n) is not None
        ]
        if args.dedup:
            used.append("--dedup")
        if used or args.sort != "score":
            raise CapsearchError(
                f"{', '.join(used) or '--sort'} filter library searches, not dataset searches",
                hint="drop --dataset to search the default library, or pass --library NAME",
            )
        return False
    from core.library.home import default_library

    return default_library() is not None


def filters_of(args: argparse.Namespace) -> Filters:
    from core.library.filters import Filters, parse_date

    return Filters(
        after=parse_date(args.after) if args.after else None,
        before=parse_date(args.before) if args.before else None,
        folder=str(args.in_folder.expanduser().resolve()) if args.in_folder else None,
        camera=args.camera,
        min_score=args.min_score,
        sort=args.sort,
        dedup=args.dedup,
    )


def search_library(args: argparse.Namespace, image_query: bool, query: str) -> int:
    """Run ``capsearch search`` on a library: text (with arithmetic) or image queries."""
    from core.search.library_search import LibrarySearcher

    if args.model:
        raise CapsearchError(
            "--model does not apply to a library search: it uses the model the library was embedded with",
            hint="drop --model, or re-embed the library with `capsearch library update --model M`",
        )
    filters = filters_of(args)
    with RichReporter() as reporter:
        searcher = LibrarySearcher.open(args.library, reporter, device=args.device)
    try:
        search = searcher.image_to_image if image_query else searcher.search_text
        hits = search(query, args.k, filters)
        if args.paths or args.paths0:
            print_paths((hit.path for hit in hits), nul=args.paths0)
        elif args.json:
            print(json_text(_library_json(searcher, image_query, query, args.k, filters, hits), indent=2))
        else:
            _print_library_hits(searcher, query, hits)
    finally:
        searcher.close()
    return 0


def _library_json(
    searcher: LibrarySearcher, image_query: bool, query: str, k: int, filters: Filters, hits: list[LibraryHit]
) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "query": query,
        "direction": "image-image" if image_query else "text-image",
        "library": searcher.name,
        "model_id": searcher.model_id,
        "index": searcher.index_kind,
        "k": k,
        "filters": asdict(filters),
        "hits": [hit.to_dict() for hit in hits],
    }


def _print_library_hits(searcher: LibrarySearcher, query: str, hits: list[LibraryHit]) -> None:
    table = Table(
        title=markup_safe(f"{query}  ({searcher.model_id}, library {searcher.name}, {searcher.size} photos)")
    )
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("date")
    table.add_column("camera")
    table.add_column("path", overflow="fold")
    for hit in hits:
        date = time.strftime("%Y-%m-%d %H:%M", time.gmtime(hit.file.when))
        table.add_row(
            str(hit.rank),
            f"{hit.score:.4f}",
            date,
            markup_safe(hit.file.camera or ""),
            markup_safe(hit.file.path),
        )
    Console().print(table)
    if not hits:
        console.print("[yellow]no results[/]")
