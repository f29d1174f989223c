"""The index registry: every index kind, registered once, with its parameters and search-time knob.

Kinds (``capsearch index --kind NAME``; ``auto`` chooses one, see :mod:`core.index.auto`):

========  =====================================  ===========  ==================
name      FAISS index                            knob         removals
========  =====================================  ===========  ==================
exact     IndexFlatIP                            -            removed
hnsw      IndexHNSWFlat                          ef_search    tombstones
hnsw-sq   IndexHNSWSQ (8-bit scalar quantiser)   ef_search    tombstones
ivf-flat  IndexIVFFlat                           nprobe       removed
ivf-pq    OPQ + IndexIVFPQ                       nprobe       removed
========  =====================================  ===========  ==================

Build a kind by name, set its knob, search::

    from core.index.registry import make_spec
    from core.index.vector_index import VectorIndex

    spec = make_spec("ivf-pq", pq_m=16, nprobe=8)          # IndexSpecError for a bad name or value
    index = VectorIndex.build(vectors, spec, ids, "model")   # or a ShardSource (core.index.sources)
    index.set_knob(32)                                       # nprobe now 32 (efSearch for HNSW kinds)
    scores, rows = index.search(queries, k=10)
    index.save(folder); VectorIndex.load(folder)             # memory-mapped where the kind allows

``make_spec("auto", max_memory=..., target_recall=0.95)`` chooses the kind by vector count and memory,
then tunes the knob on held-out queries (the choice and trade-off land in ``index.json``, key ``auto``).
An id-keyed index with add/remove is :class:`core.index.mutable.MutableIndex` over the same specs.
Listing for user interfaces: :data:`KINDS`, :data:`CHOICES`, :func:`kind_class` (``param_specs()``,
``knob()``, ``title``).
"""

from __future__ import annotations

from typing import Any

from core.index.auto import AutoSpec
from core.index.graph_kinds import ExactSpec, HNSWSpec, HNSWSQSpec
from core.index.ivf_kinds import IVFFlatSpec, IVFPQSpec
from core.index.kind_base import IndexSpec, IndexSpecError, Param

_REGISTRY: dict[str, type[IndexSpec]] = {}


def register(cls: type[IndexSpec]) -> type[IndexSpec]:
    """Add a kind (its ``kind`` name must be new)."""
    if not cls.kind or cls.kind in _REGISTRY:
        raise ValueError(f"index kind {cls.kind!r} is empty or already registered")
    _REGISTRY[cls.kind] = cls
    return cls


for _cls in (ExactSpec, HNSWSpec, HNSWSQSpec, IVFFlatSpec, IVFPQSpec, AutoSpec):
    register(_cls)

KINDS: tuple[str, ...] = tuple(k for k in _REGISTRY if k != AutoSpec.kind)  # the concrete kinds
CHOICES: tuple[str, ...] = (AutoSpec.kind, *KINDS)  # what a user may ask for


def kind_class(name: str) -> type[IndexSpec]:
    """The spec class of kind ``name``; :class:`IndexSpecError` naming the kinds for an unknown one."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise IndexSpecError(
            f"unknown index kind {name!r}", hint=f"use one of: {', '.join(CHOICES)}"
        ) from None


def make_spec(name: str, **params: Any) -> IndexSpec:
    """The spec of kind ``name`` with ``params`` (others default); errors name the bad parameter."""
    cls = kind_class(name)
    known = {p.name for p in cls.param_specs(with_knob=True)} | set(getattr(cls, "extra_fields", ()))
    unknown = sorted(set(params) - known)
    if unknown:
        raise IndexSpecError(
            f"{name} has no parameter {unknown[0]!r}",
            hint=f"{name} takes: {', '.join(sorted(known)) or 'none'}",
        )
    return cls(**params)


def spec_from_options(name: str, options: dict[str, Any]) -> IndexSpec:
    """The spec of kind ``name`` taking from ``options`` (e.g. parsed CLI flags, None when not given)
    only the parameters that kind declares."""
    cls = kind_class(name)
    known = {p.name for p in cls.param_specs(with_knob=True)} | set(getattr(cls, "extra_fields", ()))
    return make_spec(name, **{k: v for k, v in options.items() if k in known and v is not None})


def all_params() -> dict[str, Param]:
    """Every parameter name any kind declares, with the first declaration's range (for CLI flags)."""
    out: dict[str, Param] = {}
    for cls in _REGISTRY.values():
        for p in cls.param_specs(with_knob=True):
            out.setdefault(p.name, p)
    return out


def knob_of(name: str) -> Param | None:
    """The search-time knob of kind ``name`` (None for exact and auto)."""
    return kind_class(name).knob()


__all__ = [
    "CHOICES",
    "KINDS",
    "AutoSpec",
    "ExactSpec",
    "HNSWSQSpec",
    "HNSWSpec",
    "IVFFlatSpec",
    "IVFPQSpec",
    "IndexSpec",
    "IndexSpecError",
    "Param",
    "all_params",
    "kind_class",
    "knob_of",
    "make_spec",
    "register",
    "spec_from_options",
]
