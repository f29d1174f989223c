"""Typed messages that thread workers and widgets post to the UI (nothing here imports torch).

Core work in a thread worker reports through :class:`TaskProgress` and :class:`TaskLog`, and ends in one
message: the outcome of its kind (:class:`SourceOpened`, :class:`EvaluationFinished`, ...) or
:class:`TaskFailed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from core.data.records import ImageRecord, PreparedDataset
    from core.evaluation.results import EvalResult
    from core.library.update import UpdateStats
    from core.search.duplicates import DatasetDuplicates
    from core.search.retriever import Retriever
    from core.train.recipes import FinetuneSummary
    from tui.library_session import LibraryRetriever
    from tui.session import Source


class Task(StrEnum):
    """The kinds of core work the app runs in thread workers (the value is what the user reads)."""

    OPEN = "open"
    BROWSE = "browse"
    EVALUATE = "evaluate"
    SWEEP = "sweep"
    HISTORY = "history"
    FINETUNE = "finetune"
    DUPLICATES = "duplicates"
    LIBRARY = "library update"


@dataclass
class TaskProgress(Message):
    """``done`` of ``total`` units of ``stage`` of a long ``task`` are finished (from a core Reporter)."""

    task: Task
    stage: str
    done: int
    total: int | None
    info: dict[str, Any]


@dataclass
class TaskLog(Message):
    """A one-line note from the core while ``task`` runs."""

    task: Task
    text: str


@dataclass
class TaskFailed(Message):
    """``task`` stopped with ``error``: a CapsearchError (Cancelled included) or an unexpected exception."""

    task: Task
    error: BaseException


@dataclass
class SourceOpened(Message):
    """:attr:`Task.OPEN` finished: ``retriever`` searches ``source``."""

    source: Source
    retriever: Retriever | LibraryRetriever


@dataclass
class SplitLoaded(Message):
    """:attr:`Task.BROWSE` finished: the ``records`` of ``split`` of ``dataset``."""

    dataset: PreparedDataset
    split: str
    records: list[ImageRecord]


@dataclass
class EvaluationFinished(Message):
    """:attr:`Task.EVALUATE` finished: ``result`` of ``run_eval``, the ``path`` it was saved to and the
    ``records`` of its split."""

    result: EvalResult
    path: Path
    records: list[ImageRecord]


@dataclass
class SweepFinished(Message):
    """:attr:`Task.SWEEP` finished after ``count`` efSearch values (each reported as progress)."""

    count: int


@dataclass
class HistoryLoaded(Message):
    """:attr:`Task.HISTORY` finished: the earlier evaluations, oldest first."""

    rows: list[dict[str, Any]]


@dataclass
class FinetuneFinished(Message):
    """:attr:`Task.FINETUNE` finished: the recipe's ``summary`` of the new model in ``out_dir``."""

    summary: FinetuneSummary
    out_dir: Path


@dataclass
class UseImageQuery(Message):
    """Open Search with this image (a dataset image id, or a file path) as the query."""

    image: str | Path


@dataclass
class UseTextQuery(Message):
    """Open Search with this text as a text→images query."""

    text: str


@dataclass
class DatasetOpened(Message):
    """The dataset being opened is known (Browse works before the model has loaded)."""

    dataset: PreparedDataset


@dataclass
class DuplicatesFound(Message):
    """:attr:`Task.DUPLICATES` finished: the near-duplicate groups of the current dataset."""

    found: DatasetDuplicates


@dataclass
class LibraryUpdated(Message):
    """:attr:`Task.LIBRARY` finished: library ``name`` is up to date after ``stats``; ``retriever``
    searches it (None while nothing is embedded)."""

    name: str
    stats: UpdateStats
    retriever: LibraryRetriever | None


@dataclass
class LibraryChanged(Message):
    """The open library changed on disk: ``retriever`` searches it as it is now, in place of ``old`` (the
    same object when it was caught up in place)."""

    old: LibraryRetriever
    retriever: LibraryRetriever
