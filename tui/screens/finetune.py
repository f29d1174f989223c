"""Fine-tune: a base model, a dataset and the recipe's key options; live loss / lr / val-recall while it
trains (a table and a plot); cancel at any time; the new model becomes selectable everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, ProgressBar, Select, Static

from core.errors import CapsearchError
from tui.messages import TaskFailed, TaskFinished, TaskLog, TaskProgress
from tui.session import Source, resolve
from tui.widgets.choices import DatasetSelect, ModelSelect, chosen
from tui.widgets.metrics_table import fmt
from tui.widgets.nav_bar import NavBar
from tui.widgets.status_bar import StatusBar
from tui.workers import TuiReporter, run_task


def parse_number(text: str, what: str, kind: type[int] | type[float], low: float) -> Any:
    try:
        value = kind(text.strip())
    except ValueError:
        value = None
    if value is None or value < low:
        raise CapsearchError(f"{what} must be a number ≥ {low}, got {text!r}", hint=f"fix the {what} field")
    return value


class FinetuneScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+g", "start", "Start", tooltip="Start fine-tuning with these settings"),
        Binding(
            "escape", "cancel", "Cancel", tooltip="Cancel the running fine-tune (the best checkpoint is kept)"
        ),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.reporter: TuiReporter | None = None
        self.losses: list[tuple[int, float]] = []
        """(step, training loss) as reported (throttled)."""
        self.val_points: list[tuple[int, float]] = []
        self._step = 0
        self._lr = 0.0
        self.out_dir: Path | None = None

    def compose(self) -> ComposeResult:
        source: Source = self.app.source  # type: ignore[attr-defined]
        yield NavBar("finetune")
        with Horizontal(id="ft-body"):
            with VerticalScroll(id="ft-form", classes="form-column"):
                yield Label("Base model")
                yield ModelSelect(source.model, id="ft-base")
                yield Label("Weights (optional)")
                yield Input(placeholder="open_clip tag or file", classes="compact", id="ft-pretrained")
                yield Label("Dataset (train split; val checks)")
                yield DatasetSelect(source.dataset, id="ft-dataset")
                yield Label("Epochs · lr · batch size")
                with Horizontal(classes="triple"):
                    yield Input(placeholder="recipe", classes="compact", id="ft-epochs", type="integer")
                    yield Input(placeholder="recipe", classes="compact", id="ft-lr")
                    yield Input(placeholder="recipe", classes="compact", id="ft-batch", type="integer")
                yield Label("Time budget (minutes)")
                yield Input(placeholder="none: train all epochs", classes="compact", id="ft-minutes")
                yield Label("New model name")
                yield Input(placeholder="default: ft-<base>-<dataset>", classes="compact", id="ft-name")
                with Horizontal(classes="buttons"):
                    yield Button("Start ^G", compact=True, variant="primary", id="ft-start")
                    yield Button("Cancel", compact=True, variant="error", id="ft-cancel", disabled=True)
            with Vertical(id="ft-main"):
                with Horizontal(id="ft-progress-row"):
                    yield Static("idle: choose the settings and press Ctrl+G", id="ft-stage")
                    yield ProgressBar(id="ft-progress", show_eta=False)
                yield Static("", id="ft-live")
                table: DataTable[str] = DataTable(id="ft-table", cursor_type="none", zebra_stripes=True)
                table.add_columns("epoch", "step", "loss", "lr", "val mean R", "t→i R@1", "i→t R@1")
                yield table
                from textual_plotext import PlotextPlot  # only when this screen is first shown

                yield PlotextPlot(id="ft-plot")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self._draw_plot()

    def settings(self) -> dict[str, Any]:
        """The form: base, dataset, weights, name, and the recipe options the user changed."""

        def text(selector: str) -> str:
            return self.query_one(selector, Input).value.strip()

        overrides: dict[str, Any] = {}
        for field, selector, what, kind, low in (
            ("epochs", "#ft-epochs", "epochs", int, 1),
            ("lr", "#ft-lr", "learning rate", float, 1e-12),
            ("batch_size", "#ft-batch", "batch size", int, 2),
            ("time_budget_s", "#ft-minutes", "time budget", float, 0.05),
        ):
            if text(selector):
                overrides[field] = parse_number(text(selector), what, kind, low)
        if "time_budget_s" in overrides:
            overrides["time_budget_s"] *= 60
        return {
            "base": chosen(self.query_one("#ft-base", Select)),
            "dataset": chosen(self.query_one("#ft-dataset", Select)),
            "pretrained": text("#ft-pretrained") or None,
            "name": text("#ft-name") or None,
            "overrides": overrides,
        }

    def action_start(self) -> None:
        if self.reporter is not None:
            self.notify("A fine-tune is already running (Esc cancels it).", severity="warning")
            return
        try:
            settings = self.settings()
        except CapsearchError as err:
            self.app.notify_error(err, title="Check the settings")  # type: ignore[attr-defined]
            return
        self.reporter = TuiReporter(self, "finetune", interval=0.2)
        self.losses, self.val_points, self._step, self.out_dir = [], [], 0, None
        self.query_one("#ft-table", DataTable).clear()
        self._draw_plot()
        self._set_running(True, "fine-tune: starting…")
        self._finetune(settings, self.reporter)

    @work(thread=True, exclusive=True, group="finetune")
    def _finetune(self, settings: dict[str, Any], reporter: TuiReporter) -> None:
        def call() -> dict[str, Any]:
            from core.data.records import load_dataset
            from core.paths import models_dir, safe_name
            from core.train.recipes import finetune

            dataset, base = resolve(Source(dataset=settings["dataset"], model=settings["base"]), reporter)
            name = settings["name"] or safe_name(f"ft-{Path(base).name}-{load_dataset(dataset).name}")
            self.out_dir = models_dir() / name  # read on the UI thread once this task's message arrives
            return finetune(
                base,
                dataset,
                pretrained=settings["pretrained"],
                name=name,
                reporter=reporter,
                **settings["overrides"],
            )

        run_task(self, "finetune", call)

    def action_cancel(self) -> None:
        if self.reporter is not None:
            self.reporter.cancel()
            self.query_one("#ft-stage", Static).update("cancelling at the next safe point…")

    def _set_running(self, running: bool, stage: str) -> None:
        self.query_one("#ft-stage", Static).update(stage)
        self.query_one("#ft-start", Button).disabled = running
        self.query_one("#ft-cancel", Button).disabled = not running
        self.query_one("#ft-progress", ProgressBar).set_class(running, "-running")
        if not running:
            self.reporter = None

    # -- worker messages -----------------------------------------------------------------------------
    def on_task_progress(self, message: TaskProgress) -> None:
        if message.task != "finetune":
            return
        message.stop()
        info = message.info
        self.query_one("#ft-progress", ProgressBar).update(total=message.total, progress=message.done)
        amount = f" {message.done}/{message.total}" if message.total else ""
        self.query_one("#ft-stage", Static).update(f"{message.stage}{amount}")
        if message.stage == "train" and "loss" in info:
            self._step, self._lr = message.done, float(info.get("lr", 0.0))
            self.losses.append((message.done, float(info["loss"])))
            speed = f" · {info['samples_per_s']:.0f} samples/s" if "samples_per_s" in info else ""
            self.query_one("#ft-live", Static).update(
                f"step {message.done}/{message.total} · loss {info['loss']:.4f} · lr {self._lr:.2e}{speed}"
            )
            self._draw_plot()
        elif message.stage == "val":
            mean = info.get("mean_recall")
            if mean is not None:
                self.val_points.append((self._step, float(mean)))
            self.query_one("#ft-table", DataTable).add_row(
                str(message.done),
                str(self._step),
                fmt(self.losses[-1][1] if self.losses else None, 4),
                f"{self._lr:.2e}",
                fmt(mean, 2),
                fmt(info.get("t2i_R@1"), 2),
                fmt(info.get("i2t_R@1"), 2),
            )
            self._draw_plot()

    def _draw_plot(self) -> None:
        plot: Any = self.query_one("#ft-plot")
        plt = plot.plt
        plt.clear_data()
        # Series are named in the title: plotext's legend breaks on a series of one point.
        plt.title("by step: training loss (cyan, left axis), val mean recall % (green, right axis)")
        if self.losses:
            xs, ys = zip(*self.losses, strict=True)
            plt.plot(xs, ys, marker="braille", color="cyan")
        if self.val_points:
            xs, ys = zip(*self.val_points, strict=True)
            plt.plot(xs, ys, yside="right", marker="dot", color="green")
        plot.refresh()

    def on_task_log(self, message: TaskLog) -> None:
        if message.task == "finetune":
            message.stop()
            self.log.info(message.text)

    def on_task_finished(self, message: TaskFinished) -> None:
        if message.task == "finetune":
            message.stop()
            summary = message.result
            before, after = summary.test_before["mean_recall"], summary.test_after["mean_recall"]
            self._set_running(False, f"done: {summary.name} · test mean recall {before:.1f} → {after:.1f}")
            self.app.model_added(self.out_dir)  # type: ignore[attr-defined]

    def on_task_failed(self, message: TaskFailed) -> None:
        if message.task == "finetune":
            message.stop()
            self._set_running(False, "stopped")
            self.app.notify_error(message.error, title="Fine-tune stopped")  # type: ignore[attr-defined]
            if self.out_dir is not None and (self.out_dir / "model.json").is_file():
                self.app.model_added(self.out_dir, finished=False)  # type: ignore[attr-defined]

    @on(Button.Pressed, "#ft-start")
    def _start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#ft-cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()
