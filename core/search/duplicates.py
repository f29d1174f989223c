"""Near-duplicate groups among a prepared dataset's images: its cached image embeddings and perceptual
hashes and thumbnails computed on the fly (a dataset has no catalogue to keep them in)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.phash import Fingerprint, file_fingerprint
from core.data.records import ImageRecord, PreparedDataset
from core.embed.cache import split_embeddings
from core.index.duplicates import DuplicateGroup, DuplicateRule, find_duplicate_groups
from core.models.loading import LoadedModel
from core.near_duplicates import DEFAULT_THRESHOLD
from core.progress import Reporter, ensure


@dataclass
class DatasetDuplicates:
    """The groups found among ``images`` of a dataset's ``splits`` by ``model_id`` under ``rule``
    (``hashed``: whether perceptual hashes were used)."""

    dataset: PreparedDataset
    splits: list[str]
    model_id: str
    threshold: float
    images: int
    groups: list[DuplicateGroup]
    records: dict[str, ImageRecord]
    rule: DuplicateRule | None = None
    hashed: bool = False

    @property
    def applied(self) -> DuplicateRule:
        """The rule the groups were made with (the default hash clauses around ``threshold`` if unset)."""
        return self.rule or DuplicateRule(threshold=self.threshold)

    def path(self, image_id: str) -> Path:
        return self.dataset.image_path(self.records[image_id])

    def label(self, image_id: str) -> str:
        return image_id

    def to_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset.name,
            "splits": self.splits,
            "model_id": self.model_id,
            "threshold": self.threshold,
            "rule": self.applied.to_dict(),
            "pixel_hashes": self.hashed,
            "images": self.images,
            "groups": [{**g.to_dict(), "paths": [str(self.path(i)) for i in g.ids]} for g in self.groups],
        }


def dataset_duplicates(
    lm: LoadedModel,
    dataset: PreparedDataset,
    splits: list[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    reporter: Reporter | None = None,
    *,
    rule: DuplicateRule | None = None,
    hashed: bool = True,
) -> DatasetDuplicates:
    """Embed (or reuse the cache of) the images of ``splits`` (default: all), hash them (unless not
    ``hashed``) and group near-duplicates under ``rule`` (default: the default rule at ``threshold``)."""
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
    rule = rule or DuplicateRule(threshold=threshold)
    hashes: list[str | None] | None = None
    thumbs: list[bytes | None] | None = None
    if hashed:
        prints = _fingerprints(dataset, records, reporter)
        hashes, thumbs = [f.phash if f else None for f in prints], [f.thumb if f else None for f in prints]
    reporter.update("group near-duplicates", 0, 1)
    groups = find_duplicate_groups(matrix, [r.id for r in records], rule, hashes, thumbs)
    reporter.update("group near-duplicates", 1, 1)
    records_by_id = {r.id: r for r in records}
    return DatasetDuplicates(
        dataset, chosen, lm.model_id, rule.threshold, len(records), groups, records_by_id, rule, hashed
    )


def _fingerprints(
    dataset: PreparedDataset, records: list[ImageRecord], reporter: Reporter
) -> list[Fingerprint | None]:
    """The perceptual hash and thumbnail of every record's image (None where it cannot be decoded)."""
    out: list[Fingerprint | None] = []
    for k, rec in enumerate(records):
        out.append(file_fingerprint(dataset.image_path(rec)))
        if k % 200 == 0 or k == len(records) - 1:
            reporter.check_cancelled()
            reporter.update("hash images", k + 1, len(records))
    return out
