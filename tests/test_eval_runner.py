"""``run_eval``: each index's metrics are reported as soon as they are known, and equal the saved result."""

from __future__ import annotations

from typing import Any

from core.evaluation.results import save_result
from core.evaluation.runner import run_eval
from core.index.graph_kinds import HNSWSpec
from core.progress import Reporter


class Updates(Reporter):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def update(self, stage: str, done: int, total: int | None = None, **info: Any) -> None:
        self.seen.append((stage, info))


def test_metrics_of_each_index_are_reported_live(synthetic_small, tiny_model, artifacts) -> None:
    rec = Updates()
    result = run_eval(
        synthetic_small, "test", tiny_model, index="both", hnsw=HNSWSpec(ef_search=4),
        reporter=rec, latency_queries=3,
    )  # fmt: skip
    live = {info["index"]: info["metrics"] for stage, info in rec.seen if stage == "evaluate"}
    assert list(live) == ["exact", "hnsw"]
    assert live == result.by_index
    assert save_result(result).is_file()
