"""A reporter for tests: keeps every log line and progress update; optionally cancels the run once
``cancel_after_chunks`` embedding chunks are saved."""

from __future__ import annotations

from typing import Any

from core.progress import Reporter


class Recorder(Reporter):
    def __init__(self, cancel_after_chunks: int | None = None) -> None:
        super().__init__()
        self.logs: list[str] = []
        self.updates: list[tuple[str, int, int | None]] = []
        self.cancel_after_chunks = cancel_after_chunks

    def log(self, message: str) -> None:
        self.logs.append(message)

    def update(self, stage: str, done: int, total: int | None = None, **info: Any) -> None:
        self.updates.append((stage, done, total))
        if stage == "embed chunks" and done == self.cancel_after_chunks:
            self.cancel()
