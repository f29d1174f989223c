"""Evaluate: pick a dataset, split, model, index and Ks; run ``run_eval`` in a worker with live progress;
see the metrics, the worst queries (openable in Search), the history of runs and an HNSW efSearch sweep.
A run is saved (results file and history line); a sweep's evaluations are only shown."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Input,
    Label,
    ProgressBar,
    Select,
    Static,
    TabbedContent,
    TabPane,
)

from core.data.records import SPLITS
from core.directions import Direction
from core.errors import CapsearchError
from tui.messages import TaskFailed, TaskFinished, TaskLog, TaskProgress, UseImageQuery, UseTextQuery
from tui.session import Source, resolve
from tui.widgets.choices import DatasetSelect, ModelSelect, chosen
from tui.widgets.metrics_table import HistoryTable, MetricsTable, SweepTable
from tui.widgets.nav_bar import NavBar
from tui.widgets.status_bar import StatusBar
from tui.widgets.worst_queries import WorstQueriesTable
from tui.workers import TuiReporter, run_task

if TYPE_CHECKING:
    from core.data.records import ImageRecord
    from core.evaluation.results import EvalResult

INDEX_CHOICES = [("exact", "exact"), ("HNSW", "hnsw"), ("exact + HNSW", "both")]
SWEEP_EF = (8, 16, 32, 64, 128, 256)
WORST_SHOWN = 25  # per direction


def parse_ints(text: str, what: str, low: int = 1) -> list[int]:
    """Integers from ``text`` (spaces or commas); a CapsearchError naming ``what`` otherwise."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if not values or any(v < low for v in values):
        raise CapsearchError(f"{what} must be integers ≥ {low}, got {text!r}", hint=f"e.g. {what}: 1 5 10")
    return values


class EvaluateScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+g", "run_eval", "Run", tooltip="Run the evaluation with these settings"),
        Binding("ctrl+y", "sweep", "efSearch sweep", tooltip="Evaluate HNSW at several efSearch values"),
        Binding("escape", "cancel", "Cancel", tooltip="Cancel the running evaluation or sweep"),
        Binding("ctrl+r", "open_worst", "Open in Search", tooltip="Open the selected worst query in Search"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.reporter: TuiReporter | None = None
        self.result: EvalResult | None = None
        self.result_path: Path | None = None

    def compose(self) -> ComposeResult:
        yield NavBar("evaluate")
        with Horizontal(id="eval-body"):
            with VerticalScroll(id="eval-form", classes="form-column"):
                source: Source = self.app.source  # type: ignore[attr-defined]
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
                yield Select(INDEX_CHOICES, value="exact", allow_blank=False, compact=True, id="eval-index")
                yield Label("HNSW M · efConstr. · efSearch")
                with Horizontal(classes="hnsw-params"):
                    yield Input("16", classes="compact", id="eval-m", type="integer")
                    yield Input("200", classes="compact", id="eval-efc", type="integer")
                    yield Input("100", classes="compact", id="eval-ef", type="integer")
                yield Label("K values")
                yield Input("1 5 10", classes="compact", id="eval-ks")
                with Horizontal(classes="buttons"):
                    yield Button("Run ^G", compact=True, variant="primary", id="eval-run")
                    yield Button("Sweep ^Y", compact=True, id="eval-sweep")
                    yield Button("Cancel", compact=True, variant="error", id="eval-cancel", disabled=True)
            with Vertical(id="eval-main"):
                with Horizontal(id="eval-progress-row"):
                    yield Static("idle: choose the settings and press Ctrl+G", id="eval-stage")
                    yield ProgressBar(id="eval-progress", show_eta=False)
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
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self._load_history()

    # -- settings ------------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The form as run_eval arguments (raises CapsearchError for malformed numbers)."""
        from core.index.vector_index import IndexSpec

        def value(selector: str) -> str:
            return str(self.query_one(selector, Select).value)

        m, efc, ef = (
            parse_ints(self.query_one(f"#eval-{name}", Input).value, label)[0]
            for name, label in (("m", "HNSW M"), ("efc", "efConstruction"), ("ef", "efSearch"))
        )
        return {
            "dataset": chosen(self.query_one("#eval-dataset", Select)),
            "model": chosen(self.query_one("#eval-model", Select)),
            "pretrained": self.query_one("#eval-pretrained", Input).value.strip() or None,
            "split": value("#eval-split"),
            "index": value("#eval-index"),
            "hnsw": IndexSpec("hnsw", m=m, ef_construction=efc, ef_search=ef),
            "ks": tuple(parse_ints(self.query_one("#eval-ks", Input).value, "K values")),
        }

    # -- running -------------------------------------------------------------------------------------
    def _begin(self, what: str) -> dict[str, Any] | None:
        if self.reporter is not None:
            self.notify("An evaluation is already running (Esc cancels it).", severity="warning")
            return None
        try:
            settings = self.settings()
        except CapsearchError as err:
            self.app.notify_error(err, title="Check the settings")  # type: ignore[attr-defined]
            return None
        self.reporter = TuiReporter(self, what)
        self._set_running(True, f"{what}: starting…")
        return settings

    def action_run_eval(self) -> None:
        settings = self._begin("evaluate")
        if settings is None:
            return
        table = self.query_one(MetricsTable)
        table.reset(settings["ks"])
        names = ["exact", "hnsw"] if settings["index"] == "both" else [settings["index"]]
        for name in names:
            table.pending(name)
        self.query_one(WorstQueriesTable).show([])
        self._evaluate(settings, self.reporter)

    @work(thread=True, exclusive=True, group="evaluate")
    def _evaluate(self, settings: dict[str, Any], reporter: TuiReporter) -> None:
        def call() -> Any:
            from core.data.records import load_dataset
            from core.evaluation.results import save_result
            from core.evaluation.runner import run_eval

            dataset, model = resolve(Source(dataset=settings["dataset"], model=settings["model"]), reporter)
            result = run_eval(
                dataset,
                settings["split"],
                model,
                pretrained=settings["pretrained"],
                index=settings["index"],
                ks=settings["ks"],
                hnsw=settings["hnsw"],
                reporter=reporter,
            )
            path = save_result(result)
            records = load_dataset(result.dataset_dir).split(settings["split"])
            return result, path, records

        run_task(self, "evaluate", call)

    def action_sweep(self) -> None:
        settings = self._begin("sweep")
        if settings is None:
            return
        self.query_one(SweepTable).clear_points()
        self.query_one("#eval-tabs", TabbedContent).active = "tab-sweep"
        self._sweep(settings, self.reporter)

    @work(thread=True, exclusive=True, group="evaluate")
    def _sweep(self, settings: dict[str, Any], reporter: TuiReporter) -> None:
        def call() -> int:
            from dataclasses import replace

            from core.evaluation.runner import run_eval
            from core.models.loading import load_model

            dataset, model = resolve(Source(dataset=settings["dataset"], model=settings["model"]), reporter)
            lm = load_model(model, settings["pretrained"])
            for i, ef in enumerate(SWEEP_EF):
                reporter.check_cancelled()
                spec = replace(settings["hnsw"], ef_search=ef)
                result = run_eval(
                    dataset, settings["split"], lm, index="hnsw", ks=(1, 5, 10), hnsw=spec, reporter=reporter
                )
                reporter.update("sweep", i + 1, len(SWEEP_EF), ef_search=ef, payload=result.to_json())
            return len(SWEEP_EF)

        run_task(self, "sweep", call)

    def action_cancel(self) -> None:
        if self.reporter is None:
            return
        self.reporter.cancel()
        self.query_one("#eval-stage", Static).update("cancelling at the next safe point…")

    def _set_running(self, running: bool, stage: str) -> None:
        self.query_one("#eval-stage", Static).update(stage)
        self.query_one("#eval-run", Button).disabled = running
        self.query_one("#eval-sweep", Button).disabled = running
        self.query_one("#eval-cancel", Button).disabled = not running
        self.query_one("#eval-progress", ProgressBar).set_class(running, "-running")
        if not running:
            self.reporter = None

    # -- worker messages -----------------------------------------------------------------------------
    def on_task_progress(self, message: TaskProgress) -> None:
        if message.task not in ("evaluate", "sweep"):
            return
        message.stop()
        bar = self.query_one("#eval-progress", ProgressBar)
        bar.update(total=message.total, progress=message.done)
        amount = f" {message.done}/{message.total}" if message.total else ""
        self.query_one("#eval-stage", Static).update(f"{message.task}: {message.stage}{amount}")
        if message.stage == "evaluate" and "metrics" in message.info:
            self.query_one(MetricsTable).fill(str(message.info["index"]), message.info["metrics"])
        if message.stage == "sweep":
            table = self.query_one(SweepTable)
            table.add_point(int(message.info["ef_search"]), message.info["payload"])
            plot: Any = self.query_one("#eval-sweep-plot")
            table.draw(plot.plt)
            plot.refresh()

    def on_task_log(self, message: TaskLog) -> None:
        if message.task in ("evaluate", "sweep"):
            message.stop()
            self.log.info(message.text)

    def on_task_finished(self, message: TaskFinished) -> None:
        if message.task == "evaluate":
            message.stop()
            result, path, records = message.result
            self.result_path = path
            self.show_result(result, records)
            counts = result.counts
            self._set_running(False, f"done: {counts.images} images, {counts.captions} captions")
            self.notify(f"Saved to {path}", title="Evaluation finished")
            self._load_history()
        elif message.task == "sweep":
            message.stop()
            self._set_running(False, f"sweep done: {message.result} efSearch values")
        elif message.task == "history":
            message.stop()
            self.query_one(HistoryTable).show(message.result)

    def on_task_failed(self, message: TaskFailed) -> None:
        if message.task in ("evaluate", "sweep", "history"):
            message.stop()
            if message.task != "history":
                self._set_running(False, "stopped")
            self.app.notify_error(message.error, title=f"{message.task.capitalize()} failed")  # type: ignore[attr-defined]

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
        def call() -> list[dict[str, Any]]:
            from core.evaluation.results import load_history

            return load_history()

        run_task(self, "history", call)

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
        retriever = self.app.retriever  # type: ignore[attr-defined]
        result = self.result
        same = (
            retriever is not None
            and result is not None
            and (retriever.dataset, retriever.split) == (result.dataset, result.split)
        )
        # another dataset may be open in Search: then the image goes by its file
        self.post_message(UseImageQuery(query.image_id if same else query.path))

    @on(Button.Pressed, "#eval-run")
    def _run_pressed(self) -> None:
        self.action_run_eval()

    @on(Button.Pressed, "#eval-sweep")
    def _sweep_pressed(self) -> None:
        self.action_sweep()

    @on(Button.Pressed, "#eval-cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()
