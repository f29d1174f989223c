"""Housekeeping of the artifacts root: what takes disk space there, what is stale, and pruning it.

:mod:`.usage` measures folders without following symlinks; :mod:`.inventory` lists every dataset, model,
embedding cache, index, library and leftover temporary file with its size, last use and, for caches,
why it is stale; :mod:`.prune` deletes the stale ones, never outside the root.
"""
