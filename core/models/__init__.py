"""Models: built-in configs, device choice, loading by name / tag / file / checkpoint dir, checkpoints.

Importing this package registers every ``configs/*.json`` with open_clip, so ``capsearch-tiny`` and the
other built-in configs work anywhere an open_clip model name does.
"""

from __future__ import annotations

from pathlib import Path

import open_clip

CONFIG_DIR = Path(__file__).resolve().with_name("configs")


def builtin_configs() -> list[str]:
    """Names of the configs shipped in ``core/models/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


open_clip.add_model_config(CONFIG_DIR)
