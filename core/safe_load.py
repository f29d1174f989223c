"""Loading torch files from artifacts without running code: ``torch.load(weights_only=True)`` only.

A pickle can name any Python callable, so a planted ``.pt`` file could run code if it were unpickled
without torch's weights-only restriction. Every torch file capsearch reads goes through :func:`load_torch_file`, which
allows tensors and plain data (dicts, lists, tuples, numbers, strings) and turns every failure into a
:class:`~core.errors.CapsearchError` with capsearch's own advice instead of torch's.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

from core.errors import CapsearchError


class UnreadableArtifactError(CapsearchError):
    """A stored file is damaged, truncated or holds objects that cannot be loaded safely."""


def load_torch_file(path: Path, hint: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ``hint`` says what to do when it fails."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnreadableArtifactError(
            f"{path} was refused: it holds Python objects other than tensors and plain data, "
            "which could run code when loaded",
            hint=hint,
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UnreadableArtifactError(
            f"{path} is damaged or truncated ({first_line(exc)})", hint=hint
        ) from exc


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
