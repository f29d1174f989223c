"""Tables of evaluation numbers: Recall@K per index and direction, and the history of earlier runs."""

from __future__ import annotations

from typing import Any

from textual.widgets import DataTable

DIRECTION_LABELS = {"text_to_image": "text → image", "image_to_text": "image → text"}


def fmt(value: Any, digits: int = 1) -> str:
    """A metric cell: percent / rank with ``digits`` decimals, '—' when unknown (censored by HNSW depth)."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


class MetricsTable(DataTable[str]):
    """One row per (index, direction): R@K for each K, median and mean rank; rows fill in as indexes finish."""

    DEFAULT_CSS = """
    MetricsTable { height: auto; max-height: 8; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="none", zebra_stripes=True)
        self.ks: tuple[int, ...] = (1, 5, 10)

    def on_mount(self) -> None:
        self.reset(self.ks)

    def reset(self, ks: tuple[int, ...]) -> None:
        """Empty the table and lay out columns for ``ks``."""
        self.ks = ks
        self.clear(columns=True)
        self.add_column("index", key="index")
        self.add_column("direction", key="direction")
        for k in ks:
            self.add_column(f"R@{k}", key=f"R@{k}")
        self.add_column("median rank", key="median_rank")
        self.add_column("mean rank", key="mean_rank")

    def pending(self, index: str) -> None:
        """Placeholder rows for ``index`` while it is evaluated."""
        for direction, label in DIRECTION_LABELS.items():
            key = f"{index}/{direction}"
            if key not in self.rows:
                self.add_row(index, label, *["…"] * (len(self.ks) + 2), key=key)

    def fill(self, index: str, metrics: dict[str, dict[str, Any]]) -> None:
        """The numbers of ``index``: ``metrics`` is the core's ``{direction: {"R@1": %, ..., "mean_rank": r}}``."""
        self.pending(index)
        for direction in DIRECTION_LABELS:
            values = metrics.get(direction, {})
            key = f"{index}/{direction}"
            for k in self.ks:
                self.update_cell(key, f"R@{k}", fmt(values.get(f"R@{k}")), update_width=True)
            self.update_cell(key, "median_rank", fmt(values.get("median_rank")), update_width=True)
            self.update_cell(key, "mean_rank", fmt(values.get("mean_rank")), update_width=True)

    def cell_text(self, index: str, direction: str, column: str) -> str:
        """The text shown in one cell (tests compare it with the core's numbers)."""
        return str(self.get_cell(f"{index}/{direction}", column))


class HistoryTable(DataTable[str]):
    """Earlier evaluations from ``results/history.jsonl``, newest first."""

    DEFAULT_CSS = """
    HistoryTable { height: 1fr; }
    """

    COLUMNS = ("when", "model", "data", "index", "t→i R@1", "R@5", "R@10", "i→t R@1", "R@5", "R@10", "mean")

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.add_columns(*self.COLUMNS)

    def show(self, rows: list[dict[str, Any]]) -> None:
        self.clear()
        for n, row in enumerate(reversed(rows)):
            primary = row.get("primary") or next(iter(row.get("metrics") or {"?": {}}))
            metrics = (row.get("metrics") or {}).get(primary, {})
            t2i, i2t = metrics.get("text_to_image", {}), metrics.get("image_to_text", {})
            self.add_row(
                str(row.get("timestamp", "?")).replace("T", " ")[:16],
                str(row.get("model_id", "?")),
                f"{row.get('dataset', '?')}/{row.get('split', '?')}",
                primary,
                *(fmt(t2i.get(f"R@{k}")) for k in (1, 5, 10)),
                *(fmt(i2t.get(f"R@{k}")) for k in (1, 5, 10)),
                fmt((row.get("mean_recall") or {}).get(primary)),
                key=str(n),
            )


class SweepTable(DataTable[str]):
    """One row per efSearch value of an HNSW sweep: recall, recall against exact search, search latency."""

    DEFAULT_CSS = """
    SweepTable { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.points: list[tuple[int, float | None, float | None]] = []
        """(efSearch, text→image R@10, recall@10 against exact search) per row, for the plot."""

    def on_mount(self) -> None:
        self.add_columns(
            "efSearch", "t→i R@1", "t→i R@10", "i→t R@1", "i→t R@10", "recall@10 vs exact", "search p50 ms"
        )

    def add_point(self, ef_search: int, payload: dict[str, Any]) -> None:
        """A row from the ``run_eval`` payload of an HNSW run at ``ef_search``."""
        metrics = payload["metrics"]["hnsw"]
        vs_exact = payload.get("recall_vs_exact", {}).get("hnsw", {})
        latency = payload.get("timings", {}).get("latency", {}).get("hnsw", {})
        self.points.append((ef_search, metrics["text_to_image"].get("R@10"), vs_exact.get("text_to_image")))
        self.add_row(
            str(ef_search),
            fmt(metrics["text_to_image"].get("R@1")),
            fmt(metrics["text_to_image"].get("R@10")),
            fmt(metrics["image_to_text"].get("R@1")),
            fmt(metrics["image_to_text"].get("R@10")),
            fmt(vs_exact.get("text_to_image")),
            fmt(latency.get("search_ms", {}).get("p50"), 3),
        )

    def clear_points(self) -> None:
        self.points = []
        self.clear()

    def draw(self, plt: Any) -> None:
        """Plot the points on a plotext ``plt`` (the caller refreshes its widget)."""
        plt.clear_data()
        # Series are named in the title: plotext's legend breaks on a series of one point.
        plt.title("HNSW vs efSearch: text→image R@10 (cyan), recall@10 against exact (green)")
        plt.xlabel("efSearch (log scale)")
        plt.xscale("log")
        for column, color in ((1, "cyan"), (2, "green")):
            pts = [(p[0], p[column]) for p in self.points if p[column] is not None]
            if pts:
                plt.plot([x for x, _ in pts], [y for _, y in pts], marker="dot", color=color)
