"""``capsearch where`` (the artifacts root in use, why, and the size of its parts) and ``capsearch clean``
(disk use of every dataset, model, cache, index and library; pruning of what is stale, with confirmation)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.prompt import Confirm
from rich.table import Table

from core.cli.console import add_command
from core.errors import CapsearchError
from core.housekeeping.usage import parts
from core.paths import artifacts_home
from core.safe_text import json_text, markup_safe

if TYPE_CHECKING:
    from core.housekeeping.inventory import Artifact

out = Console()


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``where`` and ``clean``."""
    p = add_command(
        sub, "where", _where, help="show the artifacts root in use, why, and the size of its parts"
    )
    p.add_argument("--json", action="store_true", help="print a JSON object to stdout")
    p = add_command(
        sub,
        "clean",
        _clean,
        help="show the disk use of every dataset, model, cache, index and library; prune what is stale",
        description="list everything under the artifacts root with its size and last use, then delete the "
        "stale caches and indexes (older format, dataset or model gone or changed) and leftover temporary "
        "files, after a confirmation; datasets, models and libraries are never deleted",
    )
    p.add_argument("--yes", "-y", action="store_true", help="delete without asking (for scripts)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.add_argument(
        "--unused-days",
        type=float,
        metavar="DAYS",
        help="also prune caches and indexes not read or written for DAYS days",
    )
    p.add_argument("--json", action="store_true", help="print the listing (and what was deleted) as JSON")


def human(n: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


def _where(args: argparse.Namespace) -> int:
    home = artifacts_home()
    found = parts(home.root)
    if args.json:
        payload = {
            "root": str(home.root),
            "reason": home.reason,
            "exists": home.root.is_dir(),
            "parts": {name: {"bytes": u.bytes, "files": u.files} for name, u in found},
        }
        print(json_text(payload, indent=2))
        return 0
    out.print(f"[bold]{markup_safe(str(home.root))}[/]", soft_wrap=True, highlight=False)
    out.print(f"why: {home.describe()}", highlight=False, soft_wrap=True)
    if not found:
        out.print("[dim](empty: nothing written yet)[/]")
        return 0
    table = Table()
    for col, justify in (("part", "left"), ("size", "right"), ("files", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name, usage in found:
        table.add_row(markup_safe(name), human(usage.bytes), f"{usage.files:,}")
    table.add_row("[bold]total[/]", f"[bold]{human(sum(u.bytes for _, u in found))}[/]", "")
    out.print(table)
    return 0


def _row(item: Artifact) -> dict[str, Any]:
    return {
        "kind": item.kind,
        "name": item.name,
        "bytes": item.usage.bytes,
        "last_used": item.usage.last_used,
        "stale": item.stale,
    }


def _table(items: list[Artifact]) -> Table:
    table = Table(title="artifacts")
    for col, justify in (("kind", "left"), ("name", "left"), ("size", "right"), ("last used", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    table.add_column("stale?", overflow="fold")
    for item in items:
        stale = f"[yellow]{markup_safe(item.stale)}[/]" if item.stale else "[green]no[/]"
        table.add_row(
            item.kind, markup_safe(item.name), human(item.usage.bytes), _when(item.usage.last_used), stale
        )
    return table


def _clean(args: argparse.Namespace) -> int:
    from core.housekeeping.inventory import inventory
    from core.housekeeping.prune import prune

    home = artifacts_home()
    items = inventory(home.root, args.unused_days)
    stale = [i for i in items if i.prunable]
    total = sum(i.usage.bytes for i in stale)
    if not args.json:
        out.print(
            f"artifacts root: {markup_safe(str(home.root))} ({home.describe()})",
            soft_wrap=True,
            highlight=False,
        )
        out.print(_table(items) if items else "[dim](nothing under the artifacts root)[/]")
        out.print(f"stale or unused: {len(stale)} items, {human(total)}", highlight=False)
    if not stale or args.dry_run:
        if args.json:
            print(
                json_text(
                    {"root": str(home.root), "items": [_row(i) for i in items], "removed": []}, indent=2
                )
            )
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise CapsearchError(
                "clean needs a confirmation", hint="pass --yes to delete without asking, or --dry-run"
            )
        if not Confirm.ask(f"delete these {len(stale)} items ({human(total)})?", console=out):
            out.print("nothing deleted")
            return 1
    result = prune(items, home.root)
    if args.json:
        payload = {
            "root": str(home.root),
            "items": [_row(i) for i in items],
            "removed": [i.name for i in result.removed],
            "refused": {i.name: why for i, why in result.refused},
            "freed_bytes": result.freed,
        }
        print(json_text(payload, indent=2))
        return 0 if not result.refused else 1
    out.print(f"deleted {len(result.removed)} items, freed {human(result.freed)}", highlight=False)
    for item, why in result.refused:
        out.print(f"[red]kept {markup_safe(item.name)}: {markup_safe(why)}[/]", soft_wrap=True)
    return 0 if not result.refused else 1
