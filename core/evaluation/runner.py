"""``run_eval``: Recall@K of a model on a dataset split through any registered index kind (exact, HNSW,
HNSW-SQ, IVF-Flat, IVF-PQ, auto) or exact and HNSW both, with timings and recall@10 against exact.

It computes and returns an :class:`~core.evaluation.results.EvalResult`; saving it is the caller's choice
(:func:`core.evaluation.results.save_result`).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import numpy as np

from core import __version__
from core.data.records import PreparedDataset, load_dataset
from core.directions import Direction
from core.embed.cache import SplitEmbeddings, split_embeddings
from core.embed.engine import encode_text_query
from core.errors import CapsearchError, DatasetError
from core.evaluation.latency import percentiles
from core.evaluation.recall import (
    Metrics,
    Ranks,
    exact_ranks,
    mean_recall,
    metrics_from_ranks,
    neighbour_recall,
    search_ranks,
)
from core.evaluation.results import (
    Counts,
    EvalResult,
    IndexLatency,
    Latency,
    NeighbourRecall,
    SideBuild,
    Timings,
)
from core.index.graph_kinds import ExactSpec, HNSWSpec
from core.index.kind_base import IndexSpec
from core.index.registry import CHOICES
from core.index.split_indexes import SideIndex, SplitIndexes, index_embeddings
from core.index.vector_index import VectorIndex
from core.models.loading import LoadedModel, load_model
from core.progress import Reporter, ensure

NEIGHBOUR_K = 10
EVAL_INDEXES = ("both", *CHOICES)
T = TypeVar("T")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "capsearch": __version__}
    for dist in ("torch", "open_clip_torch", "faiss-cpu", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _variants(index: IndexSpec | str, approx: IndexSpec | None) -> dict[str, IndexSpec]:
    """Name -> spec of each index to evaluate; ``approx`` overrides the default spec of its own kind."""
    if isinstance(index, IndexSpec):
        return {index.kind: index}
    if index not in EVAL_INDEXES:
        raise CapsearchError(f"unknown index choice {index!r}", hint=f"use one of: {', '.join(EVAL_INDEXES)}")
    if index == "both":
        return {
            "exact": ExactSpec(),
            "hnsw": approx if approx is not None and approx.kind == "hnsw" else HNSWSpec(),
        }
    return {index: approx if approx is not None and approx.kind == index else IndexSpec.parse(index)}


def _checked_ks(ks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(sorted({int(k) for k in ks}))
    if not out or out[0] < 1:
        raise CapsearchError(f"invalid K values {out}", hint="give positive integers, e.g. -k 1 5 10")
    return out


def _timed(make: Callable[[], T]) -> tuple[T, float]:
    """``make()`` and the seconds it took (rounded to 0.1 ms)."""
    start = time.perf_counter()
    value = make()
    return value, round(time.perf_counter() - start, 4)


def _side_build(side: SideIndex) -> SideBuild:
    index = side.index
    return SideBuild(
        kind=index.kind,
        params=index.spec.params(),
        count=index.count,
        reused=side.reused,
        seconds=side.seconds,
        build_seconds=index.build_seconds,
        bytes=index.nbytes,
    )


def _both(indexes: SplitIndexes) -> tuple[VectorIndex, VectorIndex]:
    """The image and caption indexes (an evaluated split always has captions)."""
    if indexes.captions is None:
        raise DatasetError("an evaluated split needs captions")
    return indexes.images.index, indexes.captions.index


def _approximate(indexes: SplitIndexes) -> bool:
    return any(side.index.kind != "exact" for side in indexes.sides().values())


class _Evaluation:
    """The state of one run over one split's embeddings, index after index (run_eval is the interface)."""

    def __init__(
        self,
        lm: LoadedModel,
        dataset: str,
        split: str,
        emb: SplitEmbeddings,
        ks: tuple[int, ...],
        reporter: Reporter,
    ) -> None:
        self.lm, self.dataset, self.split, self.emb, self.ks, self.reporter = (
            lm,
            dataset,
            split,
            emb,
            ks,
            reporter,
        )
        self.built: dict[str, SplitIndexes] = {}
        self.metrics: dict[str, Metrics] = {}
        self.ranks: dict[str, Ranks] = {}
        self.rank_s: dict[str, float] = {}

    def indexes(self, spec: IndexSpec) -> SplitIndexes:
        return index_embeddings(self.lm, self.dataset, self.split, self.emb, spec, self.reporter)

    def evaluate(self, name: str, spec: IndexSpec, of: int) -> None:
        """Build (or load) the indexes of ``spec``, rank every query through them, report the metrics."""
        self.reporter.check_cancelled()
        self.built[name] = self.indexes(spec)
        self.ranks[name], self.rank_s[name] = _timed(lambda: self._rank(self.built[name]))
        self.metrics[name] = metrics_from_ranks(self.ranks[name], self.ks)
        self.reporter.update(  # the metrics of each index as soon as they are known (live tables)
            "evaluate",
            len(self.metrics),
            of,
            index=name,
            metrics=self.metrics[name],
            mean_recall=mean_recall(self.metrics[name]),
        )

    def _rank(self, indexes: SplitIndexes) -> Ranks:
        emb = self.emb
        if not _approximate(indexes):
            return exact_ranks(emb.image_emb, emb.caption_emb, emb.caption_image)
        images, captions = _both(indexes)
        return search_ranks(
            images.search, captions.search, emb.image_emb, emb.caption_emb, emb.caption_image, max(self.ks)
        )

    def recall_vs_exact(self) -> dict[str, NeighbourRecall]:
        """Recall@10 against exact search for every approximate index that ran."""
        approximate = [name for name, built in self.built.items() if _approximate(built)]
        if not approximate:
            return {}
        exact = _both(self.built.get("exact") or self.indexes(ExactSpec()))
        return {name: self._neighbour_recall(_both(self.built[name]), exact) for name in approximate}

    def _neighbour_recall(
        self, approx: tuple[VectorIndex, VectorIndex], exact: tuple[VectorIndex, VectorIndex]
    ) -> NeighbourRecall:
        out = {}
        for direction, side, queries in (
            (Direction.TEXT_TO_IMAGE, 0, self.emb.caption_emb),
            (Direction.IMAGE_TO_TEXT, 1, self.emb.image_emb),
        ):
            k = min(NEIGHBOUR_K, exact[side].count)
            _, truth = exact[side].search(queries, k)
            _, found = approx[side].search(queries, k)
            out[direction.value] = round(100.0 * neighbour_recall(found, truth, k), 4)
        return NeighbourRecall(k=NEIGHBOUR_K, **out)


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
    """Evaluate ``model`` on ``split`` of ``dataset``; ``index`` is a kind name (``registry.CHOICES``),
    ``both`` (exact and HNSW) or an IndexSpec.

    ``hnsw``: the spec used for its kind (HNSW for ``both``), e.g. with parameters from the command line.
    Latency is measured on
    ``latency_queries`` captions of the split (seeded sample), with encoding and search timed apart.
    Nothing is written but the embedding and index caches: save the result with ``save_result``.
    """
    reporter = ensure(reporter)
    ks = _checked_ks(ks)
    variants = _variants(index, hnsw)
    total_start = time.perf_counter()

    data = dataset if isinstance(dataset, PreparedDataset) else load_dataset(dataset)
    lm, load_s = _timed(
        lambda: model if isinstance(model, LoadedModel) else load_model(model, pretrained, device=device)
    )
    emb, embed_s = _timed(lambda: split_embeddings(lm, data, split, reporter=reporter))
    if not len(emb.captions):
        raise DatasetError(
            f"split {split!r} of dataset {data.name!r} has no captions, so there is nothing to evaluate",
            hint="evaluate a captioned dataset (Flickr8k, synthetic, a folder with captions)",
        )
    run = _Evaluation(lm, data.name, split, emb, ks, reporter)
    for name, spec in variants.items():
        run.evaluate(name, spec, len(variants))
    vs_exact = run.recall_vs_exact()
    image_indexes = {name: built.images.index for name, built in run.built.items()}
    latency = _latency(lm, emb, image_indexes, latency_queries, max(ks), seed, reporter)
    timings = Timings(
        load_model_s=load_s,
        embed_s=embed_s,
        embeddings_reused=emb.reused,
        rank_s=run.rank_s,
        latency=latency,
        total_s=round(time.perf_counter() - total_start, 4),
    )
    return _result(lm, data, split, run, vs_exact, timings)


def _result(
    lm: LoadedModel,
    data: PreparedDataset,
    split: str,
    run: _Evaluation,
    vs_exact: dict[str, NeighbourRecall],
    timings: Timings,
) -> EvalResult:
    """The result of ``run``, stamped now."""
    emb = run.emb
    return EvalResult(
        model_id=lm.model_id,
        model=lm.name,
        pretrained=lm.pretrained,
        dataset=data.name,
        dataset_dir=data.dir,
        split=split,
        ks=run.ks,
        counts=Counts(images=len(emb.records), captions=len(emb.captions), failed_images=len(emb.failed)),
        index={
            name: {side: _side_build(s) for side, s in built.sides().items()}
            for name, built in run.built.items()
        },
        primary="exact" if "exact" in run.metrics else next(iter(run.metrics)),
        by_index=run.metrics,
        recall_vs_exact=vs_exact,
        timings=timings,
        timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
        versions=library_versions(),
        ranks=run.ranks,
        caption_image=emb.caption_image,
    )


def _latency(
    lm: LoadedModel,
    emb: SplitEmbeddings,
    image_indexes: dict[str, VectorIndex],
    n: int,
    k: int,
    seed: int,
    reporter: Reporter,
) -> Latency | None:
    """Per-query text->image latency in ms: encoding once per query, then the search in each image index."""
    if n <= 0:
        return None
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
    by_index = {
        name: _search_latency(index, emb, vectors, encode_ms, k) for name, index in image_indexes.items()
    }
    return Latency(queries=len(texts), k=k, encode_ms=percentiles(encode_ms), by_index=by_index)


def _search_latency(
    index: VectorIndex, emb: SplitEmbeddings, vectors: list[np.ndarray], encode_ms: list[float], k: int
) -> IndexLatency:
    index.search(vectors[0], k)
    search_ms, total_ms = [], []
    for vector, enc in zip(vectors, encode_ms, strict=True):
        start = time.perf_counter()
        _, rows = index.search(vector, k)
        _ = [emb.records[r] for r in rows[0] if r >= 0]  # metadata lookup, as a search caller does
        elapsed = 1000 * (time.perf_counter() - start)
        search_ms.append(elapsed)
        total_ms.append(enc + elapsed)
    return IndexLatency(search_ms=percentiles(search_ms), total_ms=percentiles(total_ms))
