"""The ``capsearch`` command line: a rich-powered client of the core (no Textual here).

Each ``*_cmds`` module adds its subcommands through ``register(subparsers)``; a handler takes the parsed
arguments and returns an exit code. :func:`core.cli.console.run` turns core errors into one-line messages.
"""

from __future__ import annotations

import argparse

from rich_argparse import RawDescriptionRichHelpFormatter

from core import __version__
from core.cli import data_cmds, retrieval_cmds, train_cmds

DESCRIPTION = """\
capsearch: image <-> text retrieval over captioned image collections.

Typical session:
  capsearch prepare synthetic                 # the built-in captioned scenes
  capsearch prepare flickr8k ../shared/data/flickr8k
  capsearch eval --dataset flickr8k --model capsearch-tiny
  capsearch search "a dog runs on the beach" --dataset flickr8k -k 5
"""


def build_parser() -> argparse.ArgumentParser:
    """The full parser; the ``tui`` entry point adds its ``app`` command to the same subparsers."""
    parser = argparse.ArgumentParser(
        prog="capsearch", description=DESCRIPTION, formatter_class=RawDescriptionRichHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"capsearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (data_cmds, retrieval_cmds, train_cmds):
        module.register(sub)
    return parser
