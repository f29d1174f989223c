"""The ``capsearch`` command line: a rich-powered client of the core (no Textual here).

Each ``*_cmds`` module adds its subcommands through ``register(subparsers)``; a handler takes the parsed
arguments and returns an exit code. :func:`core.cli.console.run` turns core errors into one-line messages.
"""

from __future__ import annotations

import argparse
import sys

from rich_argparse import RawDescriptionRichHelpFormatter

DESCRIPTION = """\
capsearch: image <-> text retrieval over captioned image collections.

Typical session:
  capsearch prepare synthetic                 # the built-in captioned scenes
  capsearch prepare flickr8k /path/to/flickr8k
  capsearch eval --dataset flickr8k --model capsearch-tiny
  capsearch search "a dog runs on the beach" --dataset flickr8k -k 5
"""


def build_parser() -> argparse.ArgumentParser:
    """The full parser, every command's module imported (here, so that ``capsearch app`` starts without)."""
    from importlib.metadata import version

    from core.cli import (
        app_cmd,
        data_cmds,
        duplicates_cmd,
        housekeeping_cmds,
        library_cmds,
        retrieval_cmds,
        serve_cmd,
        train_cmds,
    )

    parser = argparse.ArgumentParser(
        prog="capsearch", description=DESCRIPTION, formatter_class=RawDescriptionRichHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"capsearch {version('capsearch')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (
        data_cmds,
        retrieval_cmds,
        library_cmds,
        duplicates_cmd,
        train_cmds,
        housekeeping_cmds,
        app_cmd,
        serve_cmd,
    ):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``capsearch`` console script; ``capsearch app`` is parsed on its own, for a fast first paint."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["app"]:
        from core.cli.app_cmd import app_parser, open_app
        from core.errors import CapsearchError

        args = app_parser().parse_args(argv[1:])
        try:
            return open_app(args)
        except CapsearchError as err:
            from core.cli.console import report_error

            return report_error(err)
    from core.cli.console import main as run_cli

    return run_cli(build_parser(), argv)
