"""The default near-duplicate rule, in a module that imports nothing (the CLI's parser and the app's screens
read it without loading FAISS).

Two images are near-duplicates when their image embeddings' cosine similarity reaches
``DEFAULT_THRESHOLD``, or their 64-bit perceptual hashes are at most ``PIXEL_HASH_DISTANCE`` bits apart
and their thumbnails' pixel match (:mod:`core.data.pixel_match`) reaches ``PIXEL_THRESHOLD``. Images
without thumbnails fall back to hashes alone: at most ``DEFAULT_HASH_DISTANCE`` bits apart, or at most
``LOOSE_HASH_DISTANCE`` with a similarity of at least ``LOOSE_THRESHOLD``. The numbers were chosen on half
of the planted pairs of a generated photo library (the highest share of pairs found with at most 0.5% of
groups impure, a margin under the 1% goal) by ``scripts/bench_near_duplicates.py`` with the lit-lite2
model; the other half is reported in ``artifacts/results/near_duplicates_full_library.json``. Embedding
similarity alone found no pair there that the other clauses missed, so its threshold is 1.0 (identical
vectors only) unless ``--threshold`` lowers it.
"""

DEFAULT_THRESHOLD = 1.0
DEFAULT_HASH_DISTANCE = 8
LOOSE_HASH_DISTANCE = 14
LOOSE_THRESHOLD = 0.8
PIXEL_THRESHOLD = 0.97
PIXEL_HASH_DISTANCE = 16
