"""CLI commands for datasets."""

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``prepare`` and ``datasets``."""
