"""Evaluate: pick a dataset, split, model, index and Ks; run ``run_eval`` in a worker with live progress;
see the metrics, the worst queries (openable in Search), the history of runs and an HNSW efSearch sweep.
Index kinds and their parameters come from the index registry (:mod:`core.index.registry`).
A run is saved (results file and history line); a sweep's evaluations are only shown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Button, DataTable, Input, Label, Select, TabbedContent, TabPane

from core.data.records import SPLITS
from core.directions import Direction
from core.safe_text import markup_safe
from tui.messages import (
    EvaluationFinished,
    HistoryLoaded,
    SweepFinished,
    Task,
    TaskProgress,
    UseImageQuery,
    UseTextQuery,
)
from tui.screens.form_numbers import parse_ints
from tui.screens.run_form import RunFormScreen
from tui.session import Source, resolve
from tui.widgets.choices import DatasetSelect, ModelSelect, chosen
from tui.widgets.metrics_table import HistoryTable, MetricsTable, SweepTable
from tui.widgets.worst_queries import WorstQueriesTable
from tui.workers import TuiReporter, run_task

if TYPE_CHECKING:
    from core.data.records import ImageRecord
    from core.evaluation.results import EvalResult
    from core.index.kind_base import IndexSpec


def index_choices() -> list[tuple[str, str]]:
    """Every kind the registry lists (auto first), then exact and HNSW both."""
    from core.index.registry import CHOICES, kind_class

    return [(kind_class(k).title, k) for k in CHOICES] + [("exact + HNSW", "both")]


def parse_params(text: str) -> dict[str, float]:
    """``name=value`` pairs (``ef_search=64 nprobe=32``) as a dict; CapsearchError for a malformed one."""
    from core.errors import CapsearchError

    out: dict[str, float] = {}
    for item in text.replace(",", " ").split():
        name, sep, raw = item.partition("=")
        try:
            number = float(raw)
        except ValueError:
            number = float("nan")
        if not sep or not name or number != number:
            raise CapsearchError(
                f"index parameter {item!r} is not name=number", hint="e.g. ef_search=64 nprobe=32"
            )
        out[name] = int(number) if number.is_integer() and name != "target_recall" else number
    return out


SWEEP_EF = (8, 16, 32, 64, 128, 256)
WORST_SHOWN = 25  # per direction


@dataclass(frozen=True)
class EvalSettings:
    """The Evaluate form as ``run_eval`` arguments."""

    source: Source
    """The dataset (None: the demo's), model (None: the default), weights, split and index kind."""
    spec: IndexSpec
    ks: tuple[int, ...]


class EvaluateScreen(RunFormScreen[EvalSettings]):
    """Run evaluations and sweeps; their metrics, worst queries and history."""

    PREFIX = "eval"
    WHAT = "An evaluation"
    TASKS = frozenset({Task.EVALUATE, Task.SWEEP, Task.HISTORY})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+g", "run_eval", "Run", tooltip="Run the evaluation with these settings"),
        Binding("ctrl+y", "sweep", "efSearch sweep", tooltip="Evaluate HNSW at several efSearch values"),
        Binding("escape", "cancel", "Cancel", tooltip="Cancel the running evaluation or sweep"),
        Binding("ctrl+r", "open_worst", "Open in Search", tooltip="Open the selected worst query in Search"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.result: EvalResult | None = None
        self.result_path: Path | None = None

    def compose_form(self) -> ComposeResult:
        source = self.app.source
        yield Label("Dataset")
        yield DatasetSelect(source.dataset, id="eval-dataset")
        yield Label("Split")
        yield Select(
            [(s, s) for s in SPLITS],
            value=source.split,
            allow_blank=False,
            compact=True,
            id="eval-split",
        )
        yield Label("Model")
        yield ModelSelect(source.model, id="eval-model")
        yield Label("Weights (optional)")
        yield Input(placeholder="open_clip tag or file", classes="compact", id="eval-pretrained")
        yield Label("Index")
        yield Select(index_choices(), value="exact", allow_blank=False, compact=True, id="eval-index")
        yield Label("Index parameters (name=value)")
        yield Input(placeholder="e.g. ef_search=64, nprobe=32", classes="compact", id="eval-params")
        yield Label("K values")
        yield Input("1 5 10", classes="compact", id="eval-ks")

    def compose_buttons(self) -> ComposeResult:
        yield Button("Run ^G", compact=True, variant="primary", id="eval-run", action="screen.run_eval")
        yield Button("Sweep ^Y", compact=True, id="eval-sweep", action="screen.sweep")

    def compose_results(self) -> ComposeResult:
        yield MetricsTable(id="eval-metrics")
        with TabbedContent(id="eval-tabs"):
            with TabPane("Worst queries", id="tab-worst"):
                yield WorstQueriesTable(id="eval-worst")
            with TabPane("History", id="tab-history"):
                yield HistoryTable(id="eval-history")
            with TabPane("efSearch sweep", id="tab-sweep"), Vertical(id="eval-sweep-view"):
                yield SweepTable(id="eval-sweep-table")
                from textual_plotext import PlotextPlot  # only when this screen is first shown

                yield PlotextPlot(id="eval-sweep-plot")

    def on_mount(self) -> None:
        self._load_history()

    # -- settings ------------------------------------------------------------------------------------
    def settings(self) -> EvalSettings:
        """The form as run_eval arguments (raises CapsearchError for malformed numbers)."""
        from core.index.registry import make_spec

        def value(selector: str) -> str:
            return str(self.query_one(selector, Select).value)

        kind = value("#eval-index")
        params = parse_params(self.query_one("#eval-params", Input).value)
        source = Source(
            dataset=chosen(self.query_one("#eval-dataset", Select)),
            model=chosen(self.query_one("#eval-model", Select)),
            pretrained=self.query_one("#eval-pretrained", Input).value.strip() or None,
            split=value("#eval-split"),
            index=value("#eval-index"),
        )
        return EvalSettings(
            source=source,
            spec=make_spec("hnsw" if kind == "both" else kind, **params),
            ks=tuple(parse_ints(self.query_one("#eval-ks", Input).value, "K values")),
        )

    # -- running -------------------------------------------------------------------------------------
    def action_run_eval(self) -> None:
        started = self.begin(Task.EVALUATE, "evaluate: starting…")
        if started is None:
            return
        settings, reporter = started
        table = self.query_one(MetricsTable)
        table.reset(settings.ks)
        names = ["exact", "hnsw"] if settings.source.index == "both" else [settings.source.index]
        for name in names:
            table.pending(name)
        self.query_one(WorstQueriesTable).show([])
        self._evaluate(settings, reporter)

    @work(thread=True, exclusive=True, group="evaluate")
    def _evaluate(self, settings: EvalSettings, reporter: TuiReporter) -> None:
        def call() -> EvaluationFinished:
            from core.data.records import load_dataset
            from core.evaluation.results import save_result
            from core.evaluation.runner import run_eval

            dataset, model = resolve(settings.source, reporter)
            result = run_eval(
                dataset,
                settings.source.split,
                model,
                pretrained=settings.source.pretrained,
                index=settings.source.index,
                ks=settings.ks,
                hnsw=settings.spec,
                reporter=reporter,
            )
            path = save_result(result)
            records = load_dataset(result.dataset_dir).split(settings.source.split)
            return EvaluationFinished(result, path, records)

        run_task(self, Task.EVALUATE, call)

    def action_sweep(self) -> None:
        started = self.begin(Task.SWEEP, "sweep: starting…")
        if started is None:
            return
        self.query_one(SweepTable).clear_points()
        self.query_one("#eval-tabs", TabbedContent).active = "tab-sweep"
        self._sweep(*started)

    @work(thread=True, exclusive=True, group="evaluate")
    def _sweep(self, settings: EvalSettings, reporter: TuiReporter) -> None:
        def call() -> SweepFinished:
            from core.evaluation.runner import run_eval
            from core.index.graph_kinds import HNSWSpec
            from core.models.loading import load_model

            dataset, model = resolve(settings.source, reporter)
            lm = load_model(model, settings.source.pretrained)
            for i, ef in enumerate(SWEEP_EF):
                reporter.check_cancelled()
                base = settings.spec if settings.spec.kind == "hnsw" else HNSWSpec()
                spec = base.with_knob(ef)
                result = run_eval(
                    dataset,
                    settings.source.split,
                    lm,
                    index="hnsw",
                    ks=(1, 5, 10),
                    hnsw=spec,
                    reporter=reporter,
                )
                reporter.update("sweep", i + 1, len(SWEEP_EF), ef_search=ef, payload=result.to_json())
            return SweepFinished(len(SWEEP_EF))

        run_task(self, Task.SWEEP, call)

    # -- worker messages -----------------------------------------------------------------------------
    def stage_text(self, task: Task, stage: str) -> str:
        return f"{task}: {stage}"

    def progress(self, message: TaskProgress) -> None:
        if message.stage == "evaluate" and "metrics" in message.info:
            self.query_one(MetricsTable).fill(str(message.info["index"]), message.info["metrics"])
        if message.stage == "sweep":
            table = self.query_one(SweepTable)
            table.add_point(int(message.info["ef_search"]), message.info["payload"])
            plot: Any = self.query_one("#eval-sweep-plot")
            table.draw(plot.plt)
            plot.refresh()

    def on_evaluation_finished(self, message: EvaluationFinished) -> None:
        result, records = message.result, message.records
        self.result_path = message.path
        self.show_result(result, records)
        counts = result.counts
        self._set_running(False, f"done: {counts.images} images, {counts.captions} captions")
        self.notify(f"Saved to {markup_safe(message.path)}", title="Evaluation finished")
        self._load_history()

    def on_sweep_finished(self, message: SweepFinished) -> None:
        self._set_running(False, f"sweep done: {message.count} efSearch values")

    def on_history_loaded(self, message: HistoryLoaded) -> None:
        self.query_one(HistoryTable).show(message.rows)

    def show_result(self, result: EvalResult, records: list[ImageRecord]) -> None:
        """Fill the metrics (every index that ran) and the worst queries."""
        from core.data.records import load_dataset
        from core.evaluation.worst_queries import worst_queries

        self.result = result
        table = self.query_one(MetricsTable)
        for name, metrics in result.by_index.items():
            table.fill(name, metrics)
        dataset = load_dataset(result.dataset_dir)
        self.query_one(WorstQueriesTable).show(
            worst_queries(result, records, dataset.image_path, WORST_SHOWN)
        )

    # -- history and worst queries -------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="history")
    def _load_history(self) -> None:
        def call() -> HistoryLoaded:
            from core.evaluation.results import load_history

            return HistoryLoaded(load_history())

        run_task(self, Task.HISTORY, call)

    @on(DataTable.RowSelected, "#eval-worst")
    def _worst_selected(self) -> None:
        self.action_open_worst()

    def action_open_worst(self) -> None:
        query = self.query_one(WorstQueriesTable).selected
        if query is None:
            self.notify("Run an evaluation first; then pick one of its worst queries.", severity="warning")
            return
        if query.direction is Direction.TEXT_TO_IMAGE:
            self.post_message(UseTextQuery(query.caption))
            return
        retriever = self.app.retriever
        result = self.result
        same = (
            retriever is not None
            and result is not None
            and (retriever.dataset, retriever.split) == (result.dataset, result.split)
        )
        # another dataset may be open in Search: then the image goes by its file
        self.post_message(UseImageQuery(query.image_id if same else query.path))
