"""Fixed data for snapshot tests: a stand-in retriever and evaluation whose numbers come from hashes, not
from a model, so screenshots are identical on every machine (the pilot tests use the real core)."""

from __future__ import annotations

import calendar
import hashlib
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from core.data.records import ImageRecord, PreparedDataset
from core.errors import CapsearchError
from core.evaluation.recall import Metrics, Ranks
from core.evaluation.results import Counts, EvalResult, SideBuild, Timings
from core.search.retriever import Hit
from tui.library_filters import SearchFilters
from tui.library_session import LibraryRetriever


def fixed_score(query: str, key: str) -> float:
    """A stable pseudo-similarity in [-0.2, 0.8)."""
    digest = hashlib.sha256(f"{query}\0{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 - 0.2


class FixedRetriever:
    """The Retriever interface the app uses, over a prepared split, ranked by :func:`fixed_score`."""

    model_id = "capsearch-tiny@random"
    index_kind = "exact"

    def __init__(self, data: PreparedDataset, split: str = "test") -> None:
        self.data = data
        self.split = split
        self.records = data.split(split)
        self.captions = [(i, c) for i, r in enumerate(self.records) for c in r.captions]

    @property
    def dataset(self) -> str:
        return self.data.name

    @property
    def size(self) -> int:
        return len(self.records)

    @property
    def caption_count(self) -> int:
        return len(self.captions)

    def image_path(self, record: ImageRecord) -> Path:
        return self.data.image_path(record)

    def _images(self, query: str) -> list[ImageRecord]:
        return sorted(self.records, key=lambda r: -fixed_score(query, r.id))

    def _record(self, image: str | Path) -> ImageRecord:
        for record in self.records:
            if record.id == str(image):
                return record
        raise CapsearchError(f"{str(image)!r} is not an image of this split", hint="give an image id")

    def search_text(self, query: str, k: int = 10) -> list[Hit]:
        return [
            Hit(i, fixed_score(query, r.id), r, self.image_path(r))
            for i, r in enumerate(self._images(query)[:k], 1)
        ]

    def image_to_image(self, image: str | Path, k: int = 10) -> list[Hit]:
        query = self._record(image)
        ranked = [query, *(r for r in self._images(query.id) if r.id != query.id)]
        return [
            Hit(i, fixed_score(query.id, r.id), r, self.image_path(r)) for i, r in enumerate(ranked[:k], 1)
        ]

    def image_to_text(self, image: str | Path, k: int = 10) -> list[Hit]:
        query = self._record(image).id
        ranked = sorted(range(len(self.captions)), key=lambda j: -fixed_score(query, self.captions[j][1]))[:k]
        out = []
        for rank, j in enumerate(ranked, 1):
            record = self.records[self.captions[j][0]]
            text = self.captions[j][1]
            out.append(Hit(rank, fixed_score(query, text), record, self.image_path(record), text, j))
        return out

    def ground_truth(self, query: str) -> tuple[ImageRecord, int] | None:
        ranked = self._images(query)
        for record in self.records:
            if query in record.captions:
                return record, ranked.index(record) + 1
        return None


def fixed_eval(retriever: FixedRetriever) -> EvalResult:
    """What ``run_eval`` returns, with hash-derived ranks and round metrics."""
    caption_image = [i for i, _ in retriever.captions]
    t2i = [1 + int(fixed_score(c, "t2i") * 10) % len(retriever.records) for _, c in retriever.captions]
    i2t = [1 + int(fixed_score(r.id, "i2t") * 100) % len(retriever.captions) for r in retriever.records]
    metrics: Metrics = {
        "text_to_image": {"R@1": 12.5, "R@5": 41.25, "R@10": 63.0, "median_rank": 6.0, "mean_rank": 7.9},
        "image_to_text": {"R@1": 16.7, "R@5": 44.4, "R@10": 61.1, "median_rank": 7.0, "mean_rank": 11.3},
    }
    build = SideBuild(kind="exact", params={}, count=0, reused=True, seconds=0.0, build_seconds=0.0, bytes=0)
    return EvalResult(
        model_id=retriever.model_id,
        model="capsearch-tiny",
        pretrained=None,
        dataset=retriever.dataset,
        dataset_dir=retriever.data.dir,
        split=retriever.split,
        ks=(1, 5, 10),
        counts=Counts(images=retriever.size, captions=retriever.caption_count, failed_images=0),
        index={"exact": {"images": build, "captions": build}},
        primary="exact",
        by_index={"exact": metrics},
        recall_vs_exact={},
        timings=Timings(
            load_model_s=0.0,
            embed_s=0.0,
            embeddings_reused=True,
            rank_s={"exact": 0.0},
            latency=None,
            total_s=0.0,
        ),
        timestamp="2026-11-27T12:00:00+00:00",
        versions={},
        ranks={"exact": Ranks(np.array(t2i), np.array(i2t))},
        caption_image=np.array(caption_image),
    )


def fixed_duplicates(data: PreparedDataset, split: str, threshold: float):
    """Near-duplicate groups made from hashes: the split's images in id order, cut into groups of 2 and 3."""
    from core.index.duplicates import DuplicateGroup
    from core.search.duplicates import DatasetDuplicates

    records = sorted(data.split(split), key=lambda r: r.id)
    groups, start = [], 0
    for size in (3, 2, 2, 3, 2, 2, 2):
        members = records[start : start + size]
        start += size
        sims = sorted(
            threshold + (1 - threshold) * abs(fixed_score(a.id, b.id))
            for a in members
            for b in members
            if a.id < b.id
        )
        groups.append(DuplicateGroup([r.id for r in members], list(range(len(members))), sims[0], sims[-1]))
    return DatasetDuplicates(
        data,
        [split],
        "capsearch-tiny@random",
        threshold,
        len(records),
        groups,
        {r.id: r for r in records},
    )


class FixedLibrary(LibraryRetriever):
    """A library stand-in over a prepared split's images (its root is the dataset folder): hash scores,
    and dates and cameras derived from the image ids; min score and date order honoured."""

    def __init__(self, data: PreparedDataset, split: str = "test") -> None:
        self.fixed = FixedRetriever(data, split)
        self.roots = [data.dir]
        self.searcher = SimpleNamespace(name="photos")

    @property
    def dataset(self) -> str:
        return "library photos"

    @property
    def size(self) -> int:
        return self.fixed.size

    model_id = FixedRetriever.model_id
    index_kind = "exact"

    def _library_hits(self, hits: list[Hit], filters: SearchFilters | None) -> list[Hit]:
        f = (filters or SearchFilters()).filters
        out = []
        for hit in hits:
            n = int(hit.record.id.rsplit("_", 1)[-1])
            day = f"20{18 + n % 3}-0{1 + n % 9}-1{n % 10} 10:{n % 60:02d}"
            camera = ("Pixel 7", "Canon EOS R5")[n % 2]
            when = calendar.timegm(time.strptime(day, "%Y-%m-%d %H:%M"))
            record = ImageRecord(
                id=str(hit.path.relative_to(self.roots[0])),
                image=str(hit.path),
                captions=(f"{day} · {camera}",),
            )
            if (
                (f.min_score is None or hit.score >= f.min_score)
                and (f.after is None or when >= f.after)
                and (f.before is None or when < f.before)
                and (f.camera is None or f.camera.lower() in camera.lower())
            ):
                out.append(Hit(0, hit.score, record, hit.path))
        if f.sort == "date":
            out.sort(key=lambda h: h.record.captions[0], reverse=True)
        return [Hit(rank, h.score, h.record, h.path) for rank, h in enumerate(out, 1)]

    def search_text(self, query: str, k: int = 10, filters: SearchFilters | None = None) -> list[Hit]:
        return self._library_hits(self.fixed.search_text(query, self.fixed.size), filters)[:k]
