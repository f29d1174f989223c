"""CLI commands for embedding, indexing, evaluation and search."""

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``embed``, ``index``, ``eval`` and ``search``."""
