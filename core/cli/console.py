"""Console helpers shared by the CLI commands: a rich progress reporter and error-to-exit-code handling."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich_argparse import RichHelpFormatter

from core.atomic import cannot_write
from core.errors import Cancelled, CapsearchError
from core.paths import artifacts_root
from core.progress import Reporter
from core.safe_text import markup_safe, visible

if TYPE_CHECKING:
    from core.models.loading import LoadedModel

console = Console(stderr=True)
Handler = Callable[[argparse.Namespace], int]


class RichReporter(Reporter):
    """Draws one rich progress bar per stage on stderr (stdout stays clean for pipes).

    When stderr is not a terminal (a log file, CI) rich draws nothing until the end, so each stage then
    prints a plain line when it starts, every ``PLAIN_EVERY_S`` seconds and when it is done.
    """

    PLAIN_EVERY_S = 10.0

    def __init__(self) -> None:
        super().__init__()
        self._plain = not console.is_terminal
        self._last_line: dict[str, float] = {}
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, stage: str, done: int, total: int | None = None, **info: Any) -> None:
        text = "  ".join(f"{k}={_fmt(v)}" for k, v in info.items() if isinstance(v, int | float | str))
        if self._plain:
            self._plain_line(stage, done, total, text)
            return
        if stage not in self._tasks:
            self._tasks[stage] = self.progress.add_task(stage, total=total, info=markup_safe(text))
        self.progress.update(self._tasks[stage], completed=done, total=total, info=markup_safe(text))

    def _plain_line(self, stage: str, done: int, total: int | None, text: str) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if stage in self._last_line and not finished and now - self._last_line[stage] < self.PLAIN_EVERY_S:
            return
        self._last_line[stage] = now
        of = f"/{total}" if total is not None else ""
        console.print(visible(f"{stage}: {done}{of} {text}".rstrip()), markup=False, highlight=False)

    def log(self, message: str) -> None:
        self.progress.console.print(visible(message), markup=False, highlight=False)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run(handler: Handler, args: argparse.Namespace) -> int:
    """Run a command handler: core errors become one line on stderr and exit code 2, Ctrl-C exit 130."""
    try:
        return handler(args)
    except Cancelled:
        console.print("[yellow]cancelled[/]; finished work was kept")
        return 130
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]; finished work was kept")
        return 130
    except CapsearchError as err:
        return report_error(err)
    except OSError as exc:  # a write site outside core.atomic (extracting an archive, copying images)
        error = cannot_write(exc, artifacts_root())
        if error is None:
            raise
        return report_error(error)


def report_error(err: CapsearchError) -> int:
    """Print ``err`` as one line (and its hint) on stderr, untrusted text made visible; exit code 2."""
    console.print(f"[bold red]error:[/] {markup_safe(err.message)}", highlight=False, soft_wrap=True)
    if err.hint:
        console.print(f"[dim]hint:[/] {markup_safe(err.hint)}", highlight=False, soft_wrap=True)
    return 2


def print_paths(paths: Iterable[str | Path], nul: bool = False) -> None:
    """Result paths on stdout, one per line, or each ended by a NUL byte (``nul``, for ``xargs -0``: names may
    hold newlines). Into a pipe they go as the file system's own bytes, so that they name the files (a
    non-UTF-8 name too); on a terminal as :func:`~core.safe_text.visible` shows them, so that none acts."""
    if sys.stdout.isatty() and not nul:
        for path in paths:
            print(visible(path))
        return
    sys.stdout.flush()
    end = b"\0" if nul else b"\n"
    for path in paths:
        sys.stdout.buffer.write(os.fsencode(path) + end)
    sys.stdout.buffer.flush()


def print_format_note(lm: LoadedModel, asked: str | None) -> None:
    """Say so on stderr where the precision ``asked`` (else ``$CAPSEARCH_PRECISION``) named a format that
    ``lm``'s vectors are not computed in."""
    from core.embed.fp32_fast import format_note
    from core.models.device import PRECISION_ENV

    note = format_note(lm, asked or os.environ.get(PRECISION_ENV))
    if note is not None:
        console.print(f"[dim]note:[/] {markup_safe(note)}", highlight=False, soft_wrap=True)


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    handler: Handler,
    help: str,
    description: str | None = None,
    formatter_class: type[argparse.HelpFormatter] = RichHelpFormatter,
) -> argparse.ArgumentParser:
    """Add a subcommand whose handler is run through :func:`run` (a raw-description formatter keeps a
    description's own line breaks)."""
    parser = sub.add_parser(name, help=help, description=description or help, formatter_class=formatter_class)
    parser.set_defaults(handler=handler)
    return parser


def main(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` with ``parser`` and run the chosen command (its help, exit code 2, without one)."""
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return run(args.handler, args)
