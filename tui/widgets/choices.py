"""Dataset and model pickers shared by the Open dialog, Evaluate and Fine-tune.

The demo is always the first choice (value :data:`DEMO`); a dataset or model given on the command line
that is not among the prepared or trained ones is added. Model pickers reload when a fine-tune adds a
model (the app's ``models_version``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.widgets import Select

from tui.session import dataset_choices, model_choices

DEMO = "<demo>"


def with_current(choices: list[tuple[str, str]], value: str | None, demo_label: str) -> list[tuple[str, str]]:
    """``choices`` led by the demo entry, plus ``value`` if it is not among them (a path typed on the CLI)."""
    options = [(demo_label, DEMO), *choices]
    if value is not None and value not in {v for _, v in options}:
        options.append((Path(value).name or value, value))
    return options


def chosen(select: Select[str]) -> str | None:
    """The selected dataset or model; None for the demo."""
    value = str(select.value)
    return None if value == DEMO else value


class DatasetSelect(Select[str]):
    """Prepared datasets (and the demo)."""

    def __init__(self, current: str | None, *, compact: bool = True, id: str | None = None) -> None:
        options = with_current(dataset_choices(), current, "built-in demo (synthetic scenes)")
        super().__init__(options, value=current or DEMO, allow_blank=False, compact=compact, id=id)


class ModelSelect(Select[str]):
    """Trained models, capsearch configs and ViT-B-32 (and the demo model); follows new fine-tunes."""

    def __init__(self, current: str | None, *, compact: bool = True, id: str | None = None) -> None:
        self._current = current
        super().__init__(
            self._model_options(), value=current or DEMO, allow_blank=False, compact=compact, id=id
        )

    def _model_options(self) -> list[tuple[str, str]]:
        return with_current(model_choices(), self._current, "demo model (compact, trained on the demo)")

    def on_mount(self) -> None:
        self.watch(self.app, "models_version", self._reload, init=False)

    def _reload(self, _version: Any) -> None:
        value = self.value
        self.set_options(self._model_options())
        self.value = value
