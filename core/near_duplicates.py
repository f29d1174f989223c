"""The default near-duplicate threshold, in a module that imports nothing (the CLI's parser and the app's
screens read it without loading FAISS).

0.95 was chosen on half of the planted pairs of a generated photo library (the highest share of pairs found
with at most 1% of groups impure) by ``scripts/bench_near_duplicates.py``; the other half is reported in
``artifacts/results/near_duplicates.json``.
"""

DEFAULT_THRESHOLD = 0.95
