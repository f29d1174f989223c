"""The base of every index kind: an :class:`IndexSpec` is a frozen dataclass whose fields are its parameters.

A kind declares, once, on its class: ``kind`` (the name the CLI and ``index.json`` use), ``title``, its
build parameters and its search-time knob (:class:`Param`, with ranges), whether it needs training, how it
stores ids (``native_ids``), how it takes removals (``updates``), whether a saved index can be opened
memory-mapped (``mmap``), and its memory per vector. :mod:`core.index.registry` lists the kinds.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Literal

import faiss

from core.errors import CapsearchError

Updates = Literal["remove", "tombstones"]


class IndexSpecError(CapsearchError):
    """An index specification is malformed (unknown kind, parameters out of range)."""


@dataclass(frozen=True)
class Param:
    """One integer parameter of a kind: its name (a dataclass field), range and meaning."""

    name: str
    low: int
    high: int
    help: str

    def check(self, kind: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not self.low <= value <= self.high:
            raise IndexSpecError(
                f"{kind} {self.name} must be an integer in [{self.low}, {self.high}], got {value!r}",
                hint=self.help,
            )


def param(default: int, low: int, high: int, help: str) -> Any:
    """A dataclass field that is a kind parameter (its :class:`Param` kept in the field's metadata)."""
    return dataclasses.field(default=default, metadata={"range": (low, high), "help": help})


@dataclass(frozen=True)
class IndexSpec(ABC):
    """What index to build and how to search it. Subclasses are the kinds (see the module docstring)."""

    kind: ClassVar[str] = ""
    title: ClassVar[str] = ""
    knob_name: ClassVar[str | None] = None  # the search-time field (efSearch, nprobe), or None
    native_ids: ClassVar[bool] = False  # False: wrapped in IndexIDMap2 to hold caller ids
    updates: ClassVar[Updates] = "remove"
    mmap: ClassVar[bool] = True  # a saved index may be opened memory-mapped (IO_FLAG_MMAP_IFC)

    def __post_init__(self) -> None:
        for p in self.param_specs(with_knob=True):
            p.check(self.kind, getattr(self, p.name))
        self.validate()

    def validate(self) -> None:
        """Cross-parameter checks (a subclass raises :class:`IndexSpecError`)."""
        return None

    # -- description --------------------------------------------------------------------------------------
    @classmethod
    def param_specs(cls, with_knob: bool = False) -> tuple[Param, ...]:
        """The build parameters (and the knob when ``with_knob``), with their ranges."""
        out = []
        for f in fields(cls):
            if "range" in f.metadata and (with_knob or f.name != cls.knob_name):
                low, high = f.metadata["range"]
                out.append(Param(f.name, low, high, f.metadata["help"]))
        return tuple(out)

    @classmethod
    def knob(cls) -> Param | None:
        """The search-time knob with its range, or None for a kind without one."""
        found = [p for p in cls.param_specs(with_knob=True) if p.name == cls.knob_name]
        return found[0] if found else None

    def params(self) -> dict[str, int]:
        """Every parameter value, the knob included (what ``index.json`` stores)."""
        return {p.name: getattr(self, p.name) for p in self.param_specs(with_knob=True)}

    def label(self) -> str:
        """A short name of the kind and its build parameters (the knob is left out: it is set at load
        time), also an index cache folder name, e.g. ``hnsw-m16-efc200``."""
        return "-".join([self.kind, *(f"{p.name}{getattr(self, p.name)}" for p in self.param_specs())])

    @property
    def knob_value(self) -> int | None:
        return None if self.knob_name is None else int(getattr(self, self.knob_name))

    def with_knob(self, value: int) -> IndexSpec:
        """This spec with the knob set to ``value`` (checked against its range); itself without a knob."""
        return self if self.knob_name is None else replace(self, **{self.knob_name: value})

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params()}

    @classmethod
    def parse(cls, spec: IndexSpec | str) -> IndexSpec:
        """A spec as is, or a kind name (``auto`` included) with default parameters."""
        if isinstance(spec, IndexSpec):
            return spec
        from core.index.registry import make_spec  # the registry imports every kind, this module first

        return make_spec(spec)

    def knob_range(self) -> tuple[int, int]:
        """The knob values worth trying (tuning bisects over them); (0, 0) without a knob."""
        knob = self.knob()
        return (0, 0) if knob is None else (knob.low, min(knob.high, 1024))

    # -- resolution -----------------------------------------------------------------------------------
    def resolve(self, count: int, dim: int | None = None) -> IndexSpec:
        """The concrete spec for ``count`` vectors of ``dim`` (parameters left to the data are fixed)."""
        return self

    # -- construction ---------------------------------------------------------------------------------
    @abstractmethod
    def make(self, dim: int) -> faiss.Index:
        """An empty (untrained) FAISS index of this kind, with the knob applied, metric inner product."""

    def train_count(self, count: int) -> int:
        """How many of ``count`` vectors to train on (0: the kind needs no training)."""
        return 0

    @abstractmethod
    def bytes_per_vector(self, dim: int) -> float:
        """Memory per stored vector, in bytes (codes, graph links, ids)."""

    def fixed_bytes(self, dim: int) -> int:
        """Memory independent of the vector count (centroids, rotation), in bytes."""
        return 0

    def memory_bytes(self, count: int, dim: int) -> int:
        """Estimated memory of an index of ``count`` vectors of ``dim``."""
        return int(self.fixed_bytes(dim) + count * self.bytes_per_vector(dim))

    @abstractmethod
    def apply_knob(self, index: faiss.Index) -> None:
        """Set this spec's knob on ``index`` (one made by :meth:`make`, possibly id-mapped)."""

    @abstractmethod
    def search_parameters(self, selector: faiss.IDSelector | None) -> faiss.SearchParameters:
        """Per-call search parameters: this spec's knob and ``selector`` (ids to keep)."""


def with_selector(params: Any, selector: faiss.IDSelector | None) -> faiss.SearchParameters:
    """``params`` restricted to the ids ``selector`` keeps (all ids when None)."""
    if selector is not None:
        params.sel = selector
    return params


def inner(index: faiss.Index) -> Any:
    """The index inside an ``IndexIDMap2`` (or ``index`` itself), downcast to its class."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap):
        return faiss.downcast_index(index.index)
    return index
