"""Near-duplicate groups among a library's photos: its stored vectors and catalogued perceptual hashes and
thumbnails (those a catalogue from before them lacks are taken first), grouped as ``capsearch library duplicates``
and the app's Duplicates view show them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.index.duplicates import DuplicateGroup, DuplicateRule, find_duplicate_groups
from core.library.library import Library
from core.library.update import hash_missing
from core.locks import exclusive
from core.progress import Reporter, ensure


@dataclass(frozen=True)
class LibraryDuplicates:
    """The groups found among a library's ``images`` photos under ``rule``; members are file paths."""

    library: str
    rule: DuplicateRule
    hashed: bool
    images: int
    groups: list[DuplicateGroup]
    roots: tuple[str, ...] = ()

    @property
    def threshold(self) -> float:
        return self.rule.threshold

    def path(self, image_id: str) -> Path:
        return Path(image_id)

    def label(self, image_id: str) -> str:
        """A member's path relative to the library folder holding it (absolute when under none)."""
        for root in self.roots:
            if Path(image_id).is_relative_to(root):
                return str(Path(image_id).relative_to(root))
        return image_id

    def to_dict(self) -> dict[str, object]:
        return {
            "library": self.library,
            "rule": self.rule.to_dict(),
            "pixel_hashes": self.hashed,
            "photos": self.images,
            "groups": [g.to_dict() for g in self.groups],
        }


def library_duplicates(
    lib: Library, rule: DuplicateRule, hashed: bool = True, reporter: Reporter | None = None
) -> LibraryDuplicates:
    """The near-duplicate groups of ``lib``'s embedded photos (by pixels too unless ``hashed`` is False)."""
    reporter = ensure(reporter)
    model = lib.embedded_model()
    if hashed and lib.catalogue.unhashed():
        with exclusive(lib.folder, reporter.log):  # a catalogue made before perceptual hashes
            hash_missing(lib, reporter)
    ids, vectors = lib.index(model, lib.store(model)).all_vectors()
    rows = lib.catalogue.files_by_id(ids.tolist())
    files = [rows[i] for i in ids.tolist()]
    hashes, thumbs = None, None
    if hashed:
        stored = lib.catalogue.thumbs_by_id(ids.tolist())
        hashes, thumbs = [f.phash for f in files], [stored.get(f.id) for f in files]
    groups = find_duplicate_groups(vectors, [f.path for f in files], rule, hashes, thumbs)
    return LibraryDuplicates(lib.name, rule, hashed, len(files), groups, tuple(lib.catalogue.roots()))
