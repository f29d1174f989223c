"""FAISS indexes (exact and HNSW) over embeddings, and their on-disk cache."""

from core.index.vector_index import AUTO_EXACT_MAX, IndexSpec, VectorIndex

__all__ = ["AUTO_EXACT_MAX", "IndexSpec", "VectorIndex"]
