"""The prepared dataset format and its reader.

A prepared dataset is a folder (by default ``artifacts/datasets/<name>/``) holding:

- ``train.jsonl``, ``val.jsonl``, ``test.jsonl``: one row per image,
  ``{"id": str, "image": <path relative to the image root>, "captions": [str, ...]}`` (captions in source
  order; an uncaptioned photo collection has empty lists);
- ``dataset.json``: name, source, image ``root`` (relative to this folder when the images are inside it,
  else absolute), counts per split, split scheme and seed, checksum of the inputs;
- ``report.txt``: the human-readable validation report.

A :class:`Collection` is what every ingester (folder, Flickr8k, synthetic) hands ``prepare`` to write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from core.data.validation import ValidationReport
from core.errors import DatasetError
from core.paths import datasets_dir

SPLITS = ("train", "val", "test")
META_FILE = "dataset.json"
REPORT_FILE = "report.txt"


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split and its captions."""

    id: str
    image: str
    captions: tuple[str, ...] = ()

    def to_row(self) -> dict[str, Any]:
        return {"id": self.id, "image": self.image, "captions": list(self.captions)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ImageRecord:
        return cls(id=str(row["id"]), image=str(row["image"]), captions=tuple(row.get("captions") or ()))


@dataclass
class Collection:
    """Everything ``prepare`` needs to write a dataset: records, their split, the report and provenance."""

    kind: str
    source: str
    root: Path
    records: dict[str, ImageRecord]
    splits: dict[str, list[str]]
    scheme: str
    seed: int | None
    ratios: tuple[float, ...] | None
    inputs: dict[str, str]
    report: ValidationReport
    facts: dict[str, object] = field(default_factory=dict)


@dataclass
class PreparedDataset:
    """A prepared dataset on disk; splits are read lazily and cached."""

    dir: Path
    meta: dict[str, Any]
    _splits: dict[str, list[ImageRecord]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def root(self) -> Path:
        """Absolute folder the records' ``image`` paths are relative to."""
        root = Path(self.meta["root"])
        return root if root.is_absolute() else (self.dir / root).resolve()

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if (self.dir / f"{s}.jsonl").exists()]

    @property
    def has_captions(self) -> bool:
        return any(v.get("captions", 0) for v in self.meta.get("splits", {}).values())

    @cached_property
    def fingerprint(self) -> str:
        """Checksum of the inputs the dataset was prepared from (keys caches of its embeddings)."""
        return str(self.meta.get("input_checksum", ""))

    def split(self, split: str) -> list[ImageRecord]:
        """The records of ``split`` in their stable order."""
        if split not in self._splits:
            path = self.dir / f"{split}.jsonl"
            if not path.exists():
                have = ", ".join(self.splits) or "none"
                raise DatasetError(f"dataset {self.name!r} has no split {split!r} (it has: {have})")
            rows = []
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        rows.append(ImageRecord.from_row(json.loads(line)))
                    except (ValueError, KeyError, TypeError) as exc:
                        raise DatasetError(f"{path}:{lineno}: malformed record ({exc})") from exc
            self._splits[split] = rows
        return self._splits[split]

    def image_path(self, record: ImageRecord) -> Path:
        return self.root / record.image


def _check_meta(meta: object, path: Path) -> None:
    """Refuse a ``dataset.json`` that is not what ``prepare`` writes (hand-edited, damaged, foreign)."""
    ok = (
        isinstance(meta, dict)
        and isinstance(meta.get("name"), str)
        and bool(meta["name"].strip())
        and isinstance(meta.get("root"), str)
        and isinstance(meta.get("splits", {}), dict)
        and all(isinstance(v, dict) for v in meta.get("splits", {}).values())
    )
    if not ok:
        raise DatasetError(
            f"{path} is not a prepared dataset's description (name, root and splits are missing, empty or malformed)",
            hint="prepare the dataset again",
        )


def load_dataset(name_or_path: str | Path) -> PreparedDataset:
    """Open a prepared dataset by name (under the artifacts root) or by folder path."""
    candidates = [Path(name_or_path)]
    if not Path(name_or_path).is_absolute():
        candidates.append(datasets_dir() / str(name_or_path))
    for folder in candidates:
        meta_path = folder / META_FILE
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (ValueError, OSError) as exc:
                raise DatasetError(f"{meta_path} is not valid JSON ({exc})") from exc
            _check_meta(meta, meta_path)
            return PreparedDataset(dir=folder.resolve(), meta=meta)
    raise DatasetError(
        f"no prepared dataset {str(name_or_path)!r}",
        hint="run `capsearch prepare synthetic` or `capsearch prepare flickr8k DIR` first; `capsearch datasets` lists what exists",
    )


def list_datasets() -> list[PreparedDataset]:
    """Every prepared dataset under the artifacts root, by name."""
    root = datasets_dir()
    if not root.is_dir():
        return []
    return [load_dataset(p) for p in sorted(root.iterdir()) if (p / META_FILE).is_file()]
