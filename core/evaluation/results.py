"""Evaluation results as types, and their files.

A saved evaluation is ``results_dir()/eval_<timestamp>_<model-id>_<dataset>_<split>.json`` (format version,
model id, dataset, split, indexes and their parameters, metrics, HNSW recall@10 against exact, query
latency, timings, library versions) with its per-query ranks beside it in ``<same stem>.ranks.npz`` (kept
out of the JSON so results stay small); its JSON content is also appended as one line (plus ``path``) to
``results_dir()/history.jsonl``. Files written before ``format_version`` existed (version 1) have the same
layout and load; later versions are refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import append_jsonl, atomic_path, write_json
from core.directions import EVALUATED
from core.errors import CapsearchError
from core.evaluation.recall import Metrics, Ranks, mean_recall
from core.paths import results_dir, safe_name

FORMAT_VERSION = 2
"""Version 2 added ``format_version``; version 1 files have the same layout without it."""
HISTORY_FILE = "history.jsonl"
RANKS_SUFFIX = ".ranks.npz"
Percentiles = dict[str, float]


class ResultFileError(CapsearchError):
    """A results file cannot be read (damaged, incomplete, or written by a newer capsearch)."""


@dataclass(frozen=True)
class Counts:
    images: int
    captions: int
    failed_images: int


@dataclass(frozen=True)
class SideBuild:
    """How one side's index was obtained for an evaluation."""

    kind: str
    params: dict[str, int]
    count: int
    reused: bool
    seconds: float
    build_seconds: float
    bytes: int


@dataclass(frozen=True)
class NeighbourRecall:
    """Recall@k of an approximate index's neighbours against the exact ones, in percent, per direction."""

    k: int
    text_to_image: float
    image_to_text: float


@dataclass(frozen=True)
class IndexLatency:
    search_ms: Percentiles
    total_ms: Percentiles


@dataclass(frozen=True)
class Latency:
    """Per-query text->image latency: encoding once per query, then the search in each index."""

    queries: int
    k: int
    encode_ms: Percentiles
    by_index: dict[str, IndexLatency]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"queries": self.queries, "k": self.k, "encode_ms": self.encode_ms}
        return out | {name: asdict(latency) for name, latency in self.by_index.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Latency | None:
        if not data:
            return None
        fixed = ("queries", "k", "encode_ms")
        by_index = {name: IndexLatency(**v) for name, v in data.items() if name not in fixed}
        return cls(data["queries"], data["k"], data["encode_ms"], by_index)


@dataclass(frozen=True)
class Timings:
    load_model_s: float
    embed_s: float
    embeddings_reused: bool
    rank_s: dict[str, float]
    """Seconds to rank every query, per index (saved as ``rank_<index>_s``)."""
    latency: Latency | None
    total_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "load_model_s": self.load_model_s,
            "embed_s": self.embed_s,
            "embeddings_reused": self.embeddings_reused,
            **{f"rank_{name}_s": seconds for name, seconds in self.rank_s.items()},
            "latency": self.latency.to_json() if self.latency else {},
            "total_s": self.total_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Timings:
        rank_s = {
            key[len("rank_") : -len("_s")]: value
            for key, value in data.items()
            if key.startswith("rank_") and key.endswith("_s")
        }
        latency = Latency.from_json(data.get("latency") or {})
        return cls(
            data["load_model_s"], data["embed_s"], data["embeddings_reused"], rank_s, latency, data["total_s"]
        )


@dataclass(frozen=True)
class EvalResult:
    """An evaluation of a model on a dataset split through one or more indexes (``exact``, ``hnsw``, ``auto``).

    ``by_index`` and ``ranks`` hold each index's metrics and per-query ranks; ``primary`` names the one
    reported on its own (exact when it ran).
    """

    model_id: str
    model: str
    pretrained: str | None
    dataset: str
    dataset_dir: Path
    split: str
    ks: tuple[int, ...]
    counts: Counts
    index: dict[str, dict[str, SideBuild]]
    primary: str
    by_index: dict[str, Metrics]
    recall_vs_exact: dict[str, NeighbourRecall]
    timings: Timings
    timestamp: str
    versions: dict[str, str]
    ranks: dict[str, Ranks]
    caption_image: np.ndarray

    @property
    def metrics(self) -> Metrics:
        """The primary index's metrics."""
        return self.by_index[self.primary]

    @property
    def per_query(self) -> dict[str, list[int]]:
        """The primary index's per-query ranks by direction."""
        return self.ranks[self.primary].to_dict()

    def to_json(self) -> dict[str, Any]:
        """The results file's content: everything but the per-query ranks."""
        return {
            "format_version": FORMAT_VERSION,
            "model_id": self.model_id,
            "model": self.model,
            "pretrained": self.pretrained,
            "dataset": self.dataset,
            "dataset_dir": str(self.dataset_dir),
            "split": self.split,
            "ks": list(self.ks),
            "counts": asdict(self.counts),
            "index": {
                name: {side: asdict(b) for side, b in sides.items()} for name, sides in self.index.items()
            },
            "primary": self.primary,
            "metrics": self.by_index,
            "mean_recall": {name: round(mean_recall(m), 4) for name, m in self.by_index.items()},
            "recall_vs_exact": {name: asdict(v) for name, v in self.recall_vs_exact.items()},
            "timings": self.timings.to_json(),
            "timestamp": self.timestamp,
            "versions": self.versions,
        }

    @classmethod
    def from_json(
        cls, data: dict[str, Any], ranks: dict[str, Ranks], caption_image: np.ndarray
    ) -> EvalResult:
        """The result saved as ``data`` (see :meth:`to_json`) with its per-query ranks."""
        version = data.get("format_version", 1)
        if version not in (1, FORMAT_VERSION):
            raise ResultFileError(
                f"results format version {version!r} is not one this capsearch reads (1 to {FORMAT_VERSION})",
                hint="open it with the capsearch version that wrote it",
            )
        index = {
            name: {side: SideBuild(**build) for side, build in sides.items()}
            for name, sides in data["index"].items()
        }
        return cls(
            model_id=data["model_id"],
            model=data["model"],
            pretrained=data["pretrained"],
            dataset=data["dataset"],
            dataset_dir=Path(data["dataset_dir"]),
            split=data["split"],
            ks=tuple(data["ks"]),
            counts=Counts(**data["counts"]),
            index=index,
            primary=data["primary"],
            by_index=data["metrics"],
            recall_vs_exact={name: NeighbourRecall(**v) for name, v in data["recall_vs_exact"].items()},
            timings=Timings.from_json(data["timings"]),
            timestamp=data["timestamp"],
            versions=data["versions"],
            ranks=ranks,
            caption_image=caption_image,
        )


def ranks_path(result_path: Path) -> Path:
    """The per-query ranks file beside a results JSON."""
    return result_path.with_name(result_path.stem + RANKS_SUFFIX)


def save_result(result: EvalResult) -> Path:
    """Write ``result`` to ``results_dir()`` (JSON and ranks) and append it to the history; returns the JSON path."""
    stem = (
        f"eval_{datetime.now(UTC):%Y%m%d-%H%M%S-%f}_{safe_name(result.model_id)}_{safe_name(result.dataset)}"
    )
    path = results_dir() / f"{stem}_{result.split}.json"
    _save_ranks(ranks_path(path), result.ranks, result.caption_image)
    summary = {**result.to_json(), "ranks_file": ranks_path(path).name}
    write_json(path, summary)
    append_jsonl(results_dir() / HISTORY_FILE, {**summary, "path": path.name})
    return path


def load_result(path: str | Path) -> EvalResult:
    """The evaluation saved at ``path`` (its results JSON), with its per-query ranks."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ranks, caption_image = _load_ranks(ranks_path(path))
        return EvalResult.from_json(data, ranks, caption_image)
    except (OSError, ValueError) as exc:
        raise ResultFileError(f"cannot read the evaluation in {path} ({exc})") from exc
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ResultFileError(
            f"{path} is not a complete evaluation result ({exc})", hint="run the evaluation again"
        ) from exc


def _save_ranks(path: Path, ranks: dict[str, Ranks], caption_image: np.ndarray) -> None:
    arrays = {"caption_image": np.asarray(caption_image, dtype=np.int64)}
    for name, r in ranks.items():
        for direction in EVALUATED:
            arrays[f"{name}__{direction}"] = np.asarray(getattr(r, direction), dtype=np.int64)
        arrays[f"{name}__depth"] = np.array(-1 if r.depth is None else r.depth, dtype=np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, allow_pickle=False, **arrays)


def _load_ranks(path: Path) -> tuple[dict[str, Ranks], np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    fields: dict[str, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        if "__" in key:
            name, field_name = key.split("__", 1)
            fields.setdefault(name, {})[field_name] = array
    ranks = {
        name: Ranks(f["text_to_image"], f["image_to_text"], None if int(f["depth"]) < 0 else int(f["depth"]))
        for name, f in fields.items()
    }
    return ranks, arrays["caption_image"]


def load_history() -> list[dict[str, Any]]:
    """Every evaluation summary in ``results/history.jsonl``, oldest first (a torn last line is skipped)."""
    path = results_dir() / HISTORY_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
