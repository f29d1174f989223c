"""Embedding: the batched engine (images and captions) and the on-disk cache of a split's embeddings."""
