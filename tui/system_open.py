"""Opening a file or folder with the system's viewer, as rclip users expect: ``xdg-open`` on Linux and
other Unixes, ``open`` on macOS, ``os.startfile`` on Windows.

The command is an argument list run without a shell, detached from the app (no terminal I/O); the path
is one argument, whatever characters it holds. :func:`launch` and :func:`start_file` are the only places
that touch the operating system, so tests replace them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from core.errors import CapsearchError
from core.safe_text import visible


class NoViewerError(CapsearchError):
    """The system has no program to open files with."""


def viewer_command(path: Path, platform: str | None = None) -> list[str] | None:
    """The argument list that opens ``path`` on ``platform`` (default: this one); None on Windows, which
    opens files through :func:`start_file`. :class:`NoViewerError` when the opener is not installed."""
    platform = platform or sys.platform
    if platform.startswith("win"):
        return None
    opener = "open" if platform == "darwin" else "xdg-open"
    found = shutil.which(opener)
    if found is None:
        hint = "install xdg-utils (it provides xdg-open)" if opener == "xdg-open" else "check the PATH"
        raise NoViewerError(
            f"no system viewer: {opener} was not found", hint=f"{hint}, or copy the path with Ctrl+Y"
        )
    return [found, str(path)]


def launch(args: list[str]) -> None:
    """Start ``args`` detached: no shell, no terminal input or output, its own session."""
    subprocess.Popen(  # noqa: S603 - an argument list, never a shell
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def start_file(path: Path) -> None:
    """Windows: open ``path`` with its associated program."""
    os.startfile(path)  # type: ignore[attr-defined]  # noqa: S606 - Windows only, no shell


def open_with_system(path: Path, platform: str | None = None) -> None:
    """Open ``path`` (a file or a folder) with the system viewer; a CapsearchError when it is gone or no
    viewer can be started."""
    if not path.exists():
        raise CapsearchError(
            f"{visible(path)} is gone (moved or deleted since it was indexed)",
            hint="update the library (Ctrl+N adds or rescans a folder)",
        )
    args = viewer_command(path, platform)
    try:
        if args is None:
            start_file(path)
        else:
            launch(args)
    except OSError as exc:
        raise NoViewerError(f"could not start the system viewer: {exc.strerror or exc}") from exc
