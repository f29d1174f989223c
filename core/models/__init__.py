"""Models: the catalogue of built-in configs and trained checkpoints, device choice, checkpoints, loading.

Importing :mod:`core.models.checkpoint` (which every module that builds a model imports) registers every
``configs/*.json`` with open_clip, so ``capsearch-tiny`` and the other built-in configs work anywhere an
open_clip model name does. The package itself and :mod:`core.models.catalogue` import no torch.
"""
