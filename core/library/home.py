"""Where libraries live: ``<artifacts>/libraries/<name>/``, and which one is the default.

A library folder holds ``catalogue.sqlite`` (the catalogue, with its WAL files), ``vectors/<key>/`` (keyed
embedding chunks per model and precision) and ``index/<key>/<kind>/`` (the FAISS index over them). The
default library's name is in ``<artifacts>/libraries/default.txt``: the first library made becomes it.
"""

from __future__ import annotations

import re
from pathlib import Path

from core.errors import CapsearchError
from core.paths import libraries_dir

CATALOGUE_FILE = "catalogue.sqlite"
DEFAULT_FILE = "default.txt"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class LibraryError(CapsearchError):
    """A library is missing, misnamed or cannot be updated."""


def check_name(name: str) -> str:
    """``name`` when it is a valid library name (letters, digits, ``.``, ``_``, ``-``; at most 64)."""
    if not _NAME.match(name):
        raise LibraryError(
            f"invalid library name {name!r}",
            hint="use letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit)",
        )
    return name


def library_dir(name: str) -> Path:
    return libraries_dir() / check_name(name)


def library_names() -> list[str]:
    """Libraries that have a catalogue, by name."""
    root = libraries_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CATALOGUE_FILE).is_file() and _NAME.match(p.name))


def default_library() -> str | None:
    """The default library's name when it exists, else the only library, else None."""
    names = library_names()
    try:
        chosen = (libraries_dir() / DEFAULT_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        chosen = ""
    if chosen in names:
        return chosen
    return names[0] if len(names) == 1 else None


def set_default_library(name: str) -> None:
    from core.atomic import write_text  # here: the app asks for the default library before numpy loads

    write_text(libraries_dir() / DEFAULT_FILE, check_name(name) + "\n")


def resolve_library(name: str | None) -> str:
    """``name`` when that library exists, else the default; :class:`LibraryError` when there is none."""
    if name is not None:
        if check_name(name) not in library_names():
            raise LibraryError(
                f"no library named {name!r}", hint="`capsearch library list` shows the libraries there are"
            )
        return name
    found = default_library()
    if found is None:
        raise LibraryError(
            "no library yet" if not library_names() else "several libraries and none is the default",
            hint="make one with `capsearch library add PATH`, or name one with --name",
        )
    return found
