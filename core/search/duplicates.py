"""Near-duplicate groups among a prepared dataset's images, from its cached image embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.records import ImageRecord, PreparedDataset
from core.embed.cache import split_embeddings
from core.index.duplicates import DuplicateGroup, find_duplicate_groups
from core.models.loading import LoadedModel
from core.near_duplicates import DEFAULT_THRESHOLD
from core.progress import Reporter, ensure


@dataclass
class DatasetDuplicates:
    """The groups found among ``images`` of a dataset's ``splits`` by ``model_id`` at ``threshold``."""

    dataset: PreparedDataset
    splits: list[str]
    model_id: str
    threshold: float
    images: int
    groups: list[DuplicateGroup]
    records: dict[str, ImageRecord]

    def path(self, image_id: str) -> Path:
        return self.dataset.image_path(self.records[image_id])

    def to_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset.name,
            "splits": self.splits,
            "model_id": self.model_id,
            "threshold": self.threshold,
            "images": self.images,
            "groups": [{**g.to_dict(), "paths": [str(self.path(i)) for i in g.ids]} for g in self.groups],
        }


def dataset_duplicates(
    lm: LoadedModel,
    dataset: PreparedDataset,
    splits: list[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    reporter: Reporter | None = None,
) -> DatasetDuplicates:
    """Embed (or reuse the cache of) the images of ``splits`` (default: all) and group near-duplicates."""
    reporter = ensure(reporter)
    chosen = list(splits or dataset.splits)
    vectors, records = [], []
    for split in chosen:
        emb = split_embeddings(lm, dataset, split, reporter=reporter)
        failed = {image_id for image_id, _ in emb.failed}
        keep = [k for k, rec in enumerate(emb.records) if rec.id not in failed]
        vectors.append(emb.image_emb[keep])
        records += [emb.records[k] for k in keep]
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, lm.embed_dim), np.float32)
    reporter.update("group near-duplicates", 0, 1)
    groups = find_duplicate_groups(matrix, [r.id for r in records], threshold)
    reporter.update("group near-duplicates", 1, 1)
    return DatasetDuplicates(
        dataset, chosen, lm.model_id, threshold, len(records), groups, {r.id: r for r in records}
    )
