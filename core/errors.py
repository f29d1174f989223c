"""Errors the core raises on purpose: each carries a one-line reason and, where there is one, the next step."""

from __future__ import annotations


class CapsearchError(Exception):
    """A problem the user can act on. ``str(err)`` is one line; ``hint`` says what to do next."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class DatasetError(CapsearchError):
    """A dataset is missing, unreadable or not prepared."""


class ModelError(CapsearchError):
    """A model cannot be built or its weights cannot be loaded."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights were asked for but cannot be had (offline, not cached, no such file)."""


class IndexMismatchError(CapsearchError):
    """An index, an embedding cache or a result does not belong to the model or data it is used with."""


class Cancelled(CapsearchError):
    """Long work was cancelled by the user; whatever was written before stays valid."""


class ArtifactsWriteError(CapsearchError):
    """The artifacts folder cannot be written: no permission, read-only, or full."""
