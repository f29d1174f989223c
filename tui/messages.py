"""Typed messages that thread workers and widgets post to the UI (nothing here imports torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.message import Message


class TaskProgress(Message):
    """``done`` of ``total`` units of ``stage`` of a long ``task`` are finished (from a core Reporter)."""

    def __init__(self, task: str, stage: str, done: int, total: int | None, info: dict[str, Any]) -> None:
        super().__init__()
        self.task = task
        self.stage = stage
        self.done = done
        self.total = total
        self.info = info


class TaskLog(Message):
    """A one-line note from the core while ``task`` runs."""

    def __init__(self, task: str, text: str) -> None:
        super().__init__()
        self.task = task
        self.text = text


class TaskFailed(Message):
    """``task`` stopped with ``error``: a CapsearchError (Cancelled included) or an unexpected exception."""

    def __init__(self, task: str, error: BaseException) -> None:
        super().__init__()
        self.task = task
        self.error = error


class TaskFinished(Message):
    """``task`` finished; ``result`` is what the core returned."""

    def __init__(self, task: str, result: Any) -> None:
        super().__init__()
        self.task = task
        self.result = result


class UseImageQuery(Message):
    """Open Search with this image (a dataset image id, or a file path) as the query."""

    def __init__(self, image: str | Path) -> None:
        super().__init__()
        self.image = image


class UseTextQuery(Message):
    """Open Search with this text as a text→images query."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class DatasetOpened(Message):
    """The dataset being opened is known (Browse works before the model has loaded)."""

    def __init__(self, dataset: Any) -> None:
        super().__init__()
        self.dataset = dataset
