"""FAISS indexes over embeddings: the registry of kinds (exact, HNSW, HNSW-SQ, IVF-Flat, OPQ+IVF-PQ, and
``auto``), built indexes, id-keyed mutable indexes and their on-disk cache."""

from core.index.auto import AUTO_EXACT_MAX
from core.index.kind_base import IndexSpec
from core.index.vector_index import VectorIndex

__all__ = ["AUTO_EXACT_MAX", "IndexSpec", "VectorIndex"]
