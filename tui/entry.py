"""The ``capsearch`` console script: the core's CLI plus the ``app`` command that opens the TUI."""

from __future__ import annotations

from core.cli import build_parser
from core.cli.console import main as run_cli


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_cli(parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
