"""Recall@K evaluation: rank computation (:mod:`core.evaluation.recall`) and evaluation runs with results
files and history (:mod:`core.evaluation.runner`, which loads models, so it is not imported here)."""

from core.evaluation.recall import mean_recall, recall_metrics

__all__ = ["mean_recall", "recall_metrics"]
