"""``run_eval``: Recall@K of a model on a dataset split through exact and/or HNSW search, with timings.

Each run writes ``results_dir()/eval_<timestamp>_<model-id>_<dataset>_<split>.json`` (model id, dataset,
split, indexes and their parameters, metrics, HNSW recall@10 against exact, query latency, timings,
library versions), its per-query ranks beside it in ``<same stem>.ranks.npz`` (read with
:func:`load_ranks`; kept out of the JSON so results stay small), and appends the JSON's content as one
line to ``results_dir()/history.jsonl``.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from core import __version__
from core.atomic import append_jsonl, atomic_path, write_json
from core.data.records import PreparedDataset, load_dataset
from core.embed.cache import SplitEmbeddings, split_embeddings
from core.embed.engine import encode_text_query
from core.errors import CapsearchError, DatasetError
from core.evaluation.recall import (
    DIRECTIONS,
    Metrics,
    exact_ranks,
    mean_recall,
    metrics_from_ranks,
    neighbour_recall,
    search_ranks,
)
from core.index.store import cached_index
from core.index.vector_index import IndexSpec, VectorIndex
from core.models.loading import LoadedModel, load_model
from core.paths import results_dir, safe_name
from core.progress import Reporter, ensure
from core.search.retriever import caption_ids

HISTORY_FILE = "history.jsonl"
RANKS_SUFFIX = ".ranks.npz"
RANK_KEYS = ("per_query", "caption_image")
NEIGHBOUR_K = 10
EVAL_INDEXES = ("exact", "hnsw", "both", "auto")


@dataclass
class EvalResult:
    """An evaluation: ``metrics`` and ``per_query`` ranks of the primary index (exact when it ran)."""

    metrics: Metrics
    per_query: dict[str, list[int]]
    path: Path
    payload: dict[str, Any] = field(repr=False)

    @property
    def by_index(self) -> dict[str, Metrics]:
        return self.payload["metrics"]


def _percentiles(values_ms: list[float]) -> dict[str, float]:
    array = np.asarray(values_ms, dtype=np.float64)
    return {
        "p50": round(float(np.percentile(array, 50)), 4),
        "p95": round(float(np.percentile(array, 95)), 4),
    }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "capsearch": __version__}
    for dist in ("torch", "open_clip_torch", "faiss-cpu", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _variants(index: IndexSpec | str, hnsw: IndexSpec) -> dict[str, IndexSpec]:
    """Name -> spec of each index to evaluate."""
    if isinstance(index, IndexSpec):
        return {index.kind: index}
    if index not in EVAL_INDEXES:
        raise CapsearchError(f"unknown index choice {index!r}", hint=f"use one of: {', '.join(EVAL_INDEXES)}")
    if index == "both":
        return {"exact": IndexSpec("exact"), "hnsw": hnsw}
    if index == "hnsw":
        return {"hnsw": hnsw}
    if index == "auto":
        return {"auto": IndexSpec("auto", hnsw.m, hnsw.ef_construction, hnsw.ef_search)}
    return {"exact": IndexSpec("exact")}


class _Evaluation:
    """The state of one run (kept small: run_eval is the interface)."""

    def __init__(
        self, lm: LoadedModel, data: PreparedDataset, split: str, emb: SplitEmbeddings, reporter: Reporter
    ):
        self.lm, self.data, self.split, self.emb, self.reporter = lm, data, split, emb, reporter
        self.image_ids = [r.id for r in emb.records]
        self.caption_ids = caption_ids(emb.records, emb.caption_image)

    def indexes(self, spec: IndexSpec) -> tuple[dict[str, VectorIndex], dict[str, Any]]:
        out, info = {}, {}
        for side, vectors, ids in (
            ("images", self.emb.image_emb, self.image_ids),
            ("captions", self.emb.caption_emb, self.caption_ids),
        ):
            start = time.perf_counter()
            index, reused = cached_index(
                vectors, ids, self.lm.model_id, self.data.name, self.split, side, spec,
                reporter=self.reporter, precision=self.lm.precision,
            )  # fmt: skip
            out[side] = index
            info[side] = {
                "kind": index.kind,
                "params": index.spec.params(),
                "count": index.count,
                "reused": reused,
                "seconds": round(time.perf_counter() - start, 4),
                "build_seconds": index.build_seconds,
                "bytes": index.nbytes,
            }
        return out, info

    def ranks(self, indexes: dict[str, VectorIndex], depth: int):
        if all(ix.kind == "exact" for ix in indexes.values()):
            return exact_ranks(self.emb.image_emb, self.emb.caption_emb, self.emb.caption_image)
        return search_ranks(
            indexes["images"].search,
            indexes["captions"].search,
            self.emb.image_emb,
            self.emb.caption_emb,
            self.emb.caption_image,
            depth,
        )

    def neighbour_recall(
        self, approx: dict[str, VectorIndex], exact: dict[str, VectorIndex]
    ) -> dict[str, float]:
        out = {}
        for direction, side, queries in (
            ("text_to_image", "images", self.emb.caption_emb),
            ("image_to_text", "captions", self.emb.image_emb),
        ):
            k = min(NEIGHBOUR_K, exact[side].count)
            _, truth = exact[side].search(queries, k)
            _, found = approx[side].search(queries, k)
            out[direction] = round(100.0 * neighbour_recall(found, truth, k), 4)
        return out


def run_eval(
    dataset: str | Path | PreparedDataset,
    split: str,
    model: str | LoadedModel,
    pretrained: str | None = None,
    index: IndexSpec | str = "exact",
    ks: Sequence[int] = (1, 5, 10),
    reporter: Reporter | None = None,
    hnsw: IndexSpec | None = None,
    latency_queries: int = 50,
    device: str | None = None,
    seed: int = 0,
) -> EvalResult:
    """Evaluate ``model`` on ``split`` of ``dataset``; ``index`` is exact, hnsw, both, auto or an IndexSpec.

    ``hnsw`` sets the HNSW parameters for ``hnsw``/``both``/``auto``. Latency is measured on
    ``latency_queries`` captions of the split (seeded sample), with encoding and search timed apart.
    """
    reporter = ensure(reporter)
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise CapsearchError(f"invalid K values {ks}", hint="give positive integers, e.g. -k 1 5 10")
    variants = _variants(index, hnsw or IndexSpec("hnsw"))
    total_start = time.perf_counter()

    data = dataset if isinstance(dataset, PreparedDataset) else load_dataset(dataset)
    start = time.perf_counter()
    lm = model if isinstance(model, LoadedModel) else load_model(model, pretrained, device=device)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    emb = split_embeddings(lm, data, split, reporter=reporter)
    embed_s = time.perf_counter() - start
    if not len(emb.captions):
        raise DatasetError(
            f"split {split!r} of dataset {data.name!r} has no captions, so there is nothing to evaluate",
            hint="evaluate a captioned dataset (Flickr8k, synthetic, a folder with captions)",
        )
    run = _Evaluation(lm, data, split, emb, reporter)
    depth = max(ks)

    metrics: dict[str, Metrics] = {}
    per_query: dict[str, dict[str, Any]] = {}
    index_info: dict[str, Any] = {}
    vs_exact: dict[str, Any] = {}
    built: dict[str, dict[str, VectorIndex]] = {}
    timings: dict[str, Any] = {
        "load_model_s": round(load_s, 4),
        "embed_s": round(embed_s, 4),
        "embeddings_reused": emb.reused,
    }
    for name, spec in variants.items():
        reporter.check_cancelled()
        built[name], index_info[name] = run.indexes(spec)
        start = time.perf_counter()
        ranks = run.ranks(built[name], depth)
        metrics[name] = metrics_from_ranks(ranks, ks)
        timings[f"rank_{name}_s"] = round(time.perf_counter() - start, 4)
        per_query[name] = {**ranks.to_dict(), "depth": ranks.depth}
        reporter.update(  # the metrics of each index as soon as they are known (live tables)
            "evaluate",
            len(metrics),
            len(variants),
            index=name,
            metrics=metrics[name],
            mean_recall=mean_recall(metrics[name]),
        )
    approximate = [n for n, ix in built.items() if any(i.kind != "exact" for i in ix.values())]
    if approximate:
        exact_indexes = built.get("exact") or run.indexes(IndexSpec("exact"))[0]
        for name in approximate:
            vs_exact[name] = {"k": NEIGHBOUR_K, **run.neighbour_recall(built[name], exact_indexes)}
    timings["latency"] = _latency(lm, emb, built, latency_queries, depth, seed, reporter)
    timings["total_s"] = round(time.perf_counter() - total_start, 4)

    primary = "exact" if "exact" in metrics else next(iter(metrics))
    stamp = datetime.now(UTC)
    payload = {
        "model_id": lm.model_id,
        "model": lm.name,
        "pretrained": lm.pretrained,
        "dataset": data.name,
        "dataset_dir": str(data.dir),
        "split": split,
        "ks": list(ks),
        "counts": {
            "images": len(emb.records),
            "captions": len(emb.captions),
            "failed_images": len(emb.failed),
        },
        "index": index_info,
        "primary": primary,
        "metrics": metrics,
        "mean_recall": {name: round(mean_recall(m), 4) for name, m in metrics.items()},
        "recall_vs_exact": vs_exact,
        "timings": timings,
        "timestamp": stamp.isoformat(timespec="seconds"),
        "versions": library_versions(),
        "per_query": per_query,
        "caption_image": emb.caption_image.tolist(),
    }
    stem = f"eval_{stamp:%Y%m%d-%H%M%S-%f}_{safe_name(lm.model_id)}_{safe_name(data.name)}_{split}"
    path = results_dir() / f"{stem}.json"
    ranks_path = results_dir() / f"{stem}{RANKS_SUFFIX}"
    _save_ranks(ranks_path, per_query, emb.caption_image)
    summary = {k: v for k, v in payload.items() if k not in RANK_KEYS}
    summary["ranks_file"] = ranks_path.name
    write_json(path, summary)
    append_jsonl(results_dir() / HISTORY_FILE, {**summary, "path": path.name})
    payload["ranks_file"] = ranks_path.name
    ranks_out = {k: v for k, v in per_query[primary].items() if k != "depth"}
    return EvalResult(metrics=metrics[primary], per_query=ranks_out, path=path, payload=payload)


def _save_ranks(path: Path, per_query: dict[str, dict[str, Any]], caption_image: np.ndarray) -> None:
    arrays = {"caption_image": np.asarray(caption_image, dtype=np.int64)}
    for name, ranks in per_query.items():
        for direction in DIRECTIONS:
            arrays[f"{name}__{direction}"] = np.asarray(ranks[direction], dtype=np.int64)
        arrays[f"{name}__depth"] = np.array(-1 if ranks["depth"] is None else ranks["depth"], dtype=np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def load_ranks(result: str | Path) -> dict[str, Any]:
    """The per-query ranks of an evaluation, given its results JSON (or its ``.ranks.npz``) path.

    Returns ``{"caption_image": [...], "per_query": {index: {"text_to_image": [...], "image_to_text": [...],
    "depth": int | None}}}`` in the layout of ``EvalResult.payload``.
    """
    path = Path(result)
    if path.suffix == ".json":
        path = path.with_name(path.stem + RANKS_SUFFIX)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise CapsearchError(f"cannot read per-query ranks from {path} ({exc})") from exc
    per_query: dict[str, dict[str, Any]] = {}
    for key, array in arrays.items():
        if "__" in key:
            name, field_name = key.split("__", 1)
            value = (None if int(array) < 0 else int(array)) if field_name == "depth" else array.tolist()
            per_query.setdefault(name, {})[field_name] = value
    return {"caption_image": arrays["caption_image"].tolist(), "per_query": per_query}


def _latency(
    lm: LoadedModel,
    emb: SplitEmbeddings,
    indexes: dict[str, dict[str, VectorIndex]],
    n: int,
    k: int,
    seed: int,
    reporter: Reporter,
) -> dict[str, Any]:
    """Per-query text->image latency in ms: encoding once per query, then the search in each index."""
    if n <= 0:
        return {}
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(emb.captions), size=min(n, len(emb.captions)), replace=False)
    texts = [emb.captions[i] for i in picks]
    encode_text_query(lm, texts[0])  # warm-up, not timed
    encode_ms, vectors = [], []
    for i, text in enumerate(texts):
        start = time.perf_counter()
        vectors.append(encode_text_query(lm, text))
        encode_ms.append(1000 * (time.perf_counter() - start))
        reporter.update("latency", i + 1, len(texts))
    out: dict[str, Any] = {"queries": len(texts), "k": k, "encode_ms": _percentiles(encode_ms)}
    for name, built in indexes.items():
        index = built["images"]
        index.search(vectors[0], k)
        search_ms, total_ms = [], []
        for vector, enc in zip(vectors, encode_ms, strict=True):
            start = time.perf_counter()
            _, rows = index.search(vector, k)
            _ = [emb.records[r] for r in rows[0] if r >= 0]  # metadata lookup, as a search caller does
            elapsed = 1000 * (time.perf_counter() - start)
            search_ms.append(elapsed)
            total_ms.append(enc + elapsed)
        out[name] = {"search_ms": _percentiles(search_ms), "total_ms": _percentiles(total_ms)}
    return out


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
