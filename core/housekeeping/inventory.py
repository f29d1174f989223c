"""Everything under the artifacts root, with its size, last use and, for caches, why it is stale.

Stale (pruned by ``capsearch clean``):

- an embedding cache of an older format (the loader rebuilds it on next use), of a dataset that is gone
  or was prepared again since (its fingerprint differs), or of a model that is gone or was trained
  again since (its checkpoint's model id differs); an unfinished cache of the same kinds;
- an index of an older format (no checksums: the loader refuses and rebuilds it), whose embedding cache
  is gone or stale, or that was built from other embeddings (model id or vector count differ);
- a temporary file or folder whose writer no longer runs (:func:`core.atomic.is_stale_temp`).

Unused: a cache (embeddings, index, ``cache/`` entry) not read or written for ``unused_days``. Datasets,
models, libraries, results and reports are listed, never pruned. Symlinks are never followed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from core.atomic import is_stale_temp
from core.embed.chunks import FORMAT as EMBED_FORMAT
from core.embed.chunks import MANIFEST
from core.housekeeping.usage import Usage, measure, real_subdirs
from core.index.vector_index import META_FILE as INDEX_META
from core.models.catalogue import META_FILE as MODEL_META
from core.models.catalogue import builtin_configs

CACHE_KINDS = frozenset({"embeddings", "index", "cache"})
INDEX_KEYS = ("vectors_sha256", "faiss_sha256", "model_id", "count", "ids")


@dataclass(frozen=True)
class Artifact:
    """One listed item: its kind, name (path relative to the root), usage and stale reason (None: fine)."""

    kind: str
    name: str
    path: Path
    usage: Usage
    stale: str | None = None

    @property
    def prunable(self) -> bool:
        return self.stale is not None


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@cache
def _open_clip_names() -> frozenset[str]:
    """open_clip's model config names, read from its package folder without importing it (or torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    folder = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    return frozenset(p.stem for p in folder.glob("*.json"))


class Catalogue:
    """What exists under a root: prepared datasets' fingerprints and saved checkpoints' model ids."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.datasets: dict[str, str] = {}
        for folder in real_subdirs(root / "datasets"):
            meta = _json(folder / "dataset.json")
            if meta is not None:
                self.datasets[str(meta.get("name", folder.name))] = str(meta.get("input_checksum", ""))
        self.models: dict[str, str] = {}
        for folder in real_subdirs(root / "models"):
            meta = _json(folder / MODEL_META)
            if meta is not None:
                self.models[folder.name] = str(meta.get("model_id", ""))

    def model_problem(self, model_id: str) -> str | None:
        """Why caches of ``model_id`` are stale (None: its model exists, or cannot be told apart)."""
        name = model_id.split("@", 1)[0]
        if name.endswith(".trunk") or name == "minilm-pooled":  # frozen package features (core.train)
            return None
        if name in self.models:
            current = self.models[name]
            if model_id.split("+", 1)[0] != current:
                return f"model {name} was saved again since (now {current})"
            return None
        if name in _open_clip_names() or name in builtin_configs():
            return None
        return f"model {name} is not under the artifacts root"

    def dataset_problem(self, name: str, fingerprint: str | None) -> str | None:
        if name not in self.datasets:
            return f"dataset {name} is gone"
        if fingerprint is not None and fingerprint != self.datasets[name]:
            return f"dataset {name} was prepared again since"
        return None


def embedding_problem(manifest: dict[str, Any] | None, catalogue: Catalogue) -> str | None:
    """Why an embedding cache with this manifest is stale, or None."""
    if manifest is None:
        return "no readable manifest"
    if manifest.get("format") != EMBED_FORMAT:
        return f"format {manifest.get('format')} (current {EMBED_FORMAT}): rebuilt on next use"
    fingerprint = manifest.get("dataset_fingerprint")
    return catalogue.dataset_problem(str(manifest.get("dataset")), fingerprint) or catalogue.model_problem(
        str(manifest.get("model_id"))
    )


def index_problem(meta: dict[str, Any] | None, embeddings: Path, catalogue: Catalogue) -> str | None:
    """Why an index with this ``index.json`` (over the cache in ``embeddings``) is stale, or None."""
    if meta is None or any(meta.get(key) is None for key in INDEX_KEYS):
        return "an older index format (no checksums): refused and rebuilt on next use"
    manifest = _json(embeddings / MANIFEST)
    if manifest is None:
        return "its embedding cache is gone"
    problem = embedding_problem(manifest, catalogue)
    if problem is not None:
        return f"its embedding cache is stale ({problem})"
    counts = {manifest.get("count"), manifest.get("caption_count")}
    if meta.get("model_id") != manifest.get("model_id") or meta.get("count") not in counts:
        return "built from other embeddings"
    return None


def _at_depth(folder: Path, depth: int) -> Iterator[Path]:
    if depth == 0:
        yield folder
        return
    for sub in real_subdirs(folder):
        yield from _at_depth(sub, depth - 1)


def _temps(root: Path) -> Iterator[Path]:
    """Leftover temporaries anywhere under ``root`` (not below a symlink, not inside another temp)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            if is_stale_temp(Path(dirpath, name)):
                yield Path(dirpath, name)
        dirnames[:] = [d for d in dirnames if not is_stale_temp(Path(dirpath, d))]


def _item(root: Path, kind: str, path: Path, stale: str | None = None) -> Artifact:
    return Artifact(kind, path.relative_to(root).as_posix(), path, measure(path), stale)


def _caches(root: Path, catalogue: Catalogue) -> Iterator[Artifact]:
    for folder in _at_depth(root / "embeddings", 3):
        yield _item(root, "embeddings", folder, embedding_problem(_json(folder / MANIFEST), catalogue))
    for folder in _at_depth(root / "indexes", 4):
        split = folder.parent.relative_to(root / "indexes")
        stale = index_problem(_json(folder / INDEX_META), root / "embeddings" / split, catalogue)
        yield _item(root, "index", folder, stale)
    for folder in _at_depth(root / "cache", 1):
        yield _item(root, "cache", folder)


def inventory(root: Path, unused_days: float | None = None) -> list[Artifact]:
    """Every dataset, model, library, cache, index and leftover temporary under ``root``."""
    catalogue = Catalogue(root)
    items: list[Artifact] = []
    for kind, folder in (("dataset", "datasets"), ("model", "models"), ("library", "libraries")):
        items += [_item(root, kind, sub) for sub in real_subdirs(root / folder)]
    items += list(_caches(root, catalogue))
    if unused_days is not None:
        cutoff = time.time() - unused_days * 86400
        items = [
            _unused(item, unused_days) if item.kind in CACHE_KINDS and _older(item, cutoff) else item
            for item in items
        ]
    items += [_item(root, "temp", path, "leftover of a writer that no longer runs") for path in _temps(root)]
    return items


def _older(item: Artifact, cutoff: float) -> bool:
    return item.stale is None and (item.usage.last_used or 0.0) < cutoff


def _unused(item: Artifact, days: float) -> Artifact:
    return Artifact(item.kind, item.name, item.path, item.usage, f"unused for over {days:g} days")
