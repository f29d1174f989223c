"""Fine-tune: a base model, a dataset and the recipe's key options; live loss / lr / val-recall while it
trains (a table and a plot); cancel at any time; the new model becomes selectable everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Input, Label, Select, Static

from tui.messages import FinetuneFinished, Task, TaskProgress
from tui.screens.form_numbers import parse_number
from tui.screens.run_form import RunFormScreen
from tui.session import Source, resolve
from tui.widgets.choices import DatasetSelect, ModelSelect, chosen
from tui.widgets.metrics_table import fmt
from tui.workers import TuiReporter, run_task


@dataclass(frozen=True)
class FinetuneSettings:
    """The Fine-tune form: what to start from, the new model's name and the recipe overrides."""

    source: Source
    """The base model (None: the default), its weights and the dataset (None: the demo's)."""
    name: str | None
    overrides: dict[str, Any]
    """The recipe options the user changed (``finetune`` keyword arguments)."""


class FinetuneScreen(RunFormScreen[FinetuneSettings]):
    """Fine-tune a model with live loss and validation recall."""

    PREFIX = "ft"
    WHAT = "A fine-tune"
    TASKS = frozenset({Task.FINETUNE})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+g", "start", "Start", tooltip="Start fine-tuning with these settings"),
        Binding(
            "escape", "cancel", "Cancel", tooltip="Cancel the running fine-tune (the best checkpoint is kept)"
        ),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[tuple[int, float]] = []
        """(step, training loss) as reported (throttled)."""
        self.val_points: list[tuple[int, float]] = []
        self._step = 0
        self._lr = 0.0
        self.out_dir: Path | None = None

    def compose_form(self) -> ComposeResult:
        source = self.app.source
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

    def compose_buttons(self) -> ComposeResult:
        yield Button("Start ^G", compact=True, variant="primary", id="ft-start", action="screen.start")

    def compose_results(self) -> ComposeResult:
        yield Static("", id="ft-live")
        table: DataTable[str] = DataTable(id="ft-table", cursor_type="none", zebra_stripes=True)
        table.add_columns("epoch", "step", "loss", "lr", "val mean R", "t→i R@1", "i→t R@1")
        yield table
        from textual_plotext import PlotextPlot  # only when this screen is first shown

        yield PlotextPlot(id="ft-plot")

    def on_mount(self) -> None:
        self._draw_plot()

    def settings(self) -> FinetuneSettings:
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
        source = Source(
            model=chosen(self.query_one("#ft-base", Select)),
            dataset=chosen(self.query_one("#ft-dataset", Select)),
            pretrained=text("#ft-pretrained") or None,
        )
        return FinetuneSettings(
            source=source,
            name=text("#ft-name") or None,
            overrides=overrides,
        )

    def action_start(self) -> None:
        started = self.begin(Task.FINETUNE, "fine-tune: starting…", interval=0.2)
        if started is None:
            return
        self.losses, self.val_points, self._step, self.out_dir = [], [], 0, None
        self.query_one("#ft-table", DataTable).clear()
        self._draw_plot()
        self._finetune(*started)

    @work(thread=True, exclusive=True, group="finetune")
    def _finetune(self, settings: FinetuneSettings, reporter: TuiReporter) -> None:
        def call() -> FinetuneFinished:
            from core.data.records import load_dataset
            from core.paths import models_dir, safe_name
            from core.train.recipes import finetune

            dataset, base = resolve(settings.source, reporter)
            name = settings.name or safe_name(f"ft-{Path(base).name}-{load_dataset(dataset).name}")
            self.out_dir = out_dir = models_dir() / name  # on failure, read on the UI thread
            summary = finetune(
                base,
                dataset,
                pretrained=settings.source.pretrained,
                name=name,
                reporter=reporter,
                **settings.overrides,
            )
            return FinetuneFinished(summary, out_dir)

        run_task(self, Task.FINETUNE, call)

    # -- worker messages -----------------------------------------------------------------------------
    def progress(self, message: TaskProgress) -> None:
        info = message.info
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
            plt.ylim(0, 100, yside="right")  # recall is a percentage: autoscaling stretched it to ~140
        plot.refresh()

    def on_finetune_finished(self, message: FinetuneFinished) -> None:
        summary = message.summary
        before, after = summary.test_before["mean_recall"], summary.test_after["mean_recall"]
        self._set_running(False, f"done: {summary.name} · test mean recall {before:.1f} → {after:.1f}")
        self.app.model_added(message.out_dir)

    def failure_title(self, task: Task) -> str:
        return "Fine-tune stopped"

    def failed(self, task: Task) -> None:
        if self.out_dir is not None and (self.out_dir / "model.json").is_file():
            self.app.model_added(self.out_dir, finished=False)
