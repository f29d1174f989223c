"""An open library: its catalogue, its vectors per model and its FAISS index, kept in agreement.

Commit order, so that an interruption anywhere loses at most the batch in flight: a vector chunk is made
durable first, then the catalogue transaction that references it, and the index is saved (atomically)
with the catalogue generation it reflects. Opening an index whose generation differs from the
catalogue's catches it up from the vectors: ids the catalogue no longer has are removed, the missing ones
added (:meth:`Library.index`).

A library searches with its *active* model key. Adding with another model makes it the *target*: the old
vectors and index stay in use until every content has a vector for the target, which then becomes active.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.index.mutable import MutableIndex
from core.index.vector_index import IndexSpec
from core.library.catalogue import Catalogue, ModelKey
from core.library.home import CATALOGUE_FILE, LibraryError, library_dir, library_names
from core.library.vectors import VectorStore
from core.paths import safe_name
from core.progress import Reporter, ensure

if TYPE_CHECKING:  # a model is loaded (torch, open_clip) only by the commands that embed
    from core.models.loading import LoadedModel

INDEX_KINDS = ("auto", "exact", "hnsw")


def model_key(name: str, lm: LoadedModel) -> ModelKey:
    """The key of ``lm``'s vectors (``name``: how to load it again): its id made file-safe, plus what the
    vectors are computed in unless fp32 (:func:`core.embed.fp32_fast.vectors_label`)."""
    from core.embed.fp32_fast import vectors_label

    label = vectors_label(lm)
    key = safe_name(lm.model_id) + ("" if label == "fp32" else f".{label}")
    return ModelKey(key, name, lm.model_id, lm.precision, lm.embed_dim)


def computed_in(model: ModelKey) -> str:
    """What ``model``'s vectors are computed in, as :func:`model_key` named it in the key."""
    base = safe_name(model.model_id) + "."
    return model.key[len(base) :] if model.key.startswith(base) else "fp32"


@dataclass
class Library:
    """One library, open; close it (or use ``with``) to release the catalogue."""

    name: str
    folder: Path
    catalogue: Catalogue
    saved_generation: dict[str, int] = field(default_factory=dict)

    @classmethod
    def open(cls, name: str, create: bool = False) -> Library:
        folder = library_dir(name)
        if not create and name not in library_names():
            raise LibraryError(
                f"no library named {name!r}", hint="`capsearch library list` shows the libraries there are"
            )
        return cls(name, folder, Catalogue(folder / CATALOGUE_FILE))

    def close(self) -> None:
        self.catalogue.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- models ----------------------------------------------------------------------------------------
    @property
    def active(self) -> ModelKey | None:
        return self.catalogue.model(self.catalogue.get_meta("model"))

    def embedded_model(self) -> ModelKey:
        """The active model; a :class:`LibraryError` saying what to run when nothing is embedded yet."""
        model = self.active
        if model is None:
            raise LibraryError(
                f"library {self.name!r} has nothing embedded yet",
                hint=f"run `capsearch library update {self.name}`",
            )
        return model

    @property
    def target(self) -> ModelKey | None:
        """The model being filled in: the target when one is set, else the active model."""
        return self.catalogue.model(self.catalogue.get_meta("target")) or self.active

    def set_target(self, model: ModelKey) -> None:
        """Embed with ``model`` from now on; the active model serves searches until it is complete."""
        if self.catalogue.model(model.key) != model:
            self.catalogue.add_model(model)
        active = self.active_key() or model.key
        target = None if model.key == active else model.key
        if (self.active_key(), self.catalogue.get_meta("target")) == (active, target):
            return
        with self.catalogue.change() as db:
            self.catalogue.set_meta(db, "model", active)
            self.catalogue.set_meta(db, "target", target)

    def active_key(self) -> str | None:
        return self.catalogue.get_meta("model")

    def promote_if_complete(self, model: ModelKey) -> bool:
        """Make ``model`` active once no readable content lacks its vector; True when it is active."""
        if self.catalogue.missing_vectors(model.key):
            return model.key == self.active_key()
        if model.key != self.active_key():
            with self.catalogue.change() as db:
                self.catalogue.set_meta(db, "model", model.key)
                self.catalogue.set_meta(db, "target", None)
        return True

    def store(self, model: ModelKey) -> VectorStore:
        return VectorStore(self.folder / "vectors" / model.key, self.catalogue, model)

    # -- index -----------------------------------------------------------------------------------------
    @property
    def index_kind(self) -> str:
        return self.catalogue.get_meta("index") or "auto"

    def set_index_kind(self, kind: str) -> None:
        if kind not in INDEX_KINDS:
            raise LibraryError(f"unknown index kind {kind!r}", hint=f"use one of {', '.join(INDEX_KINDS)}")
        with self.catalogue.change() as db:
            self.catalogue.set_meta(db, "index", kind)

    def spec_for(self, model: ModelKey) -> IndexSpec:
        """The index spec for the library's current size (``auto``: exact, then HNSW past the crossover)."""
        return IndexSpec.parse(self.index_kind).resolve(self.catalogue.embedded_count(model.key))

    def index_folder(self, model: ModelKey) -> Path:
        return self.folder / "index" / model.key

    def index_is_current(self, model: ModelKey) -> bool:
        """Whether the saved index reflects the catalogue as it is (read from its JSON alone)."""
        import json

        try:
            meta = json.loads(
                (self.index_folder(model) / self.spec_for(model).label() / "index.json").read_text()
            )
        except (OSError, ValueError):
            return False
        return isinstance(meta, dict) and (meta.get("generation"), meta.get("model_key")) == (
            self.catalogue.generation,
            model.key,
        )

    def has_index(self, model: ModelKey) -> bool:
        """Whether an index of ``model`` of the wanted kind has been saved (it may be behind)."""
        return (self.index_folder(model) / self.spec_for(model).label() / "index.json").is_file()

    def add_lag(self, model: ModelKey, changes: int) -> int:
        """Count ``changes`` not yet in the saved index of ``model``; the total since it was saved."""
        key = f"lag:{model.key}"
        lag = int(self.catalogue.get_meta(key) or 0) + changes
        if changes:
            with self.catalogue.transaction() as db:  # bookkeeping: not a change of the catalogue's contents
                self.catalogue.set_meta(db, key, str(lag))
        return lag

    def index(self, model: ModelKey, store: VectorStore, reporter: Reporter | None = None) -> MutableIndex:
        """The saved index of ``model`` caught up with the catalogue (in memory; :meth:`save_index` writes
        it). A missing, damaged or wrong-kind index is built again from the vectors."""
        reporter = ensure(reporter)
        wanted = self.spec_for(model)
        generation = self.catalogue.generation
        try:
            index, meta = MutableIndex.load(self.index_folder(model) / wanted.label())
            if meta.get("model_key") != model.key:
                raise LibraryError(f"it belongs to {meta.get('model_key')}")
            self.saved_generation[model.key] = int(meta.get("generation", -1))
            if meta.get("generation") == generation:
                return index
        except Exception as exc:  # any unreadable saved index is rebuilt from the vectors
            if (self.index_folder(model) / wanted.label()).exists():
                reporter.log(f"library {self.name}: index unusable ({exc}); rebuilding it from the vectors")
            index = MutableIndex.empty(model.dim, wanted)
        added, removed = self.sync_index(index, model, store)
        if added or removed:
            reporter.log(f"library {self.name}: index caught up with the catalogue (+{added} -{removed})")
        return index

    def sync_index(self, index: MutableIndex, model: ModelKey, store: VectorStore) -> tuple[int, int]:
        """Remove the ids the catalogue no longer holds and add the missing ones; (added, removed)."""
        desired = self.catalogue.indexed(model.key)
        live = set(index.live_ids().tolist())
        gone = np.array(sorted(live - desired.keys()), np.int64)
        index.remove(gone)
        new = np.array(sorted(desired.keys() - live), np.int64)
        found, vectors = store.rows([desired[i] for i in new.tolist()])
        index.add(new[found], vectors)
        return int(found.sum()), len(gone)

    def save_index(self, index: MutableIndex, model: ModelKey) -> None:
        """Save ``index`` with the catalogue generation it reflects (the caller synced it and holds the lock)."""
        generation = self.catalogue.generation
        if self.saved_generation.get(model.key) == generation:
            return  # nothing changed since it was saved
        extra = {"generation": generation, "model_key": model.key, "library": self.name}
        index.save(self.index_folder(model) / index.spec.label(), extra)
        self.saved_generation[model.key] = generation
        with self.catalogue.transaction() as db:
            self.catalogue.set_meta(db, f"lag:{model.key}", "0")

    def matching_spec(self, index: MutableIndex, model: ModelKey) -> bool:
        """Whether ``index`` is of the kind the library wants for its current size."""
        return self.spec_for(model).label() == index.spec.label()


def remove_library(name: str) -> Path:
    """Delete a library's folder (catalogue, vectors, index); the photos themselves are never touched."""
    folder = library_dir(name)
    if name not in library_names():
        raise LibraryError(f"no library named {name!r}")
    shutil.rmtree(folder)
    return folder


def add_folders(
    name: str,
    folders: list[Path],
    excludes: Sequence[str] = (),
    index_kind: str | None = None,
) -> Library:
    """Open (or make) library ``name`` with ``folders`` added to its roots and ``excludes`` to its
    excluded folders and globs; the first library made becomes the default. The caller updates it."""
    from core.library.home import default_library, set_default_library

    roots = []
    for folder in folders:
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise LibraryError(f"{folder} is not a folder", hint="give folders of photos to add")
        roots.append(str(path))
    patterns = [str(Path(e).expanduser().resolve()) if Path(e).expanduser().is_dir() else e for e in excludes]
    lib = Library.open(name, create=True)
    lib.catalogue.add_roots(roots, patterns)
    if index_kind is not None:
        lib.set_index_kind(index_kind)
    if default_library() is None:
        set_default_library(name)
    return lib
