"""CLI commands for training and fine-tuning."""

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``finetune`` and ``demo``."""
