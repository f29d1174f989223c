"""One writer per artifact folder: an advisory ``flock`` on a lock file kept under ``<artifacts>/.locks/``
(named by the folder's path, so the folders themselves hold only their own files).

Two capsearch processes on one artifacts root may both want to write the same dataset, cache, index or
model folder. Every atomic file write is safe on its own, but a run is several writes (a training run's
checkpoint, resume state and history; a dataset's splits and report), so the second writer waits until
the first has finished and then finds its work done or continues from it. The lock is released by the
kernel when its process dies, so a killed run never leaves a stale lock behind; the next holder removes
the temporary files such a run left (:func:`core.atomic.remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from core.atomic import remove_stale_temps, writing_to
from core.paths import artifacts_root

LOCKS = ".locks"


def lock_file(folder: Path) -> Path:
    """The lock file of ``folder``: the sha256 of its absolute path, under the artifacts root."""
    key = hashlib.sha256(os.fsencode(Path(folder).resolve())).hexdigest()[:32]
    return artifacts_root() / LOCKS / f"{key}.lock"


@contextlib.contextmanager
def exclusive(folder: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the write lock of ``folder`` (created if missing), then clear what killed writers left in it;
    ``on_wait`` is told when another process holds the lock."""
    folder = Path(folder)
    path = lock_file(folder)
    with writing_to(path.parent):
        folder.mkdir(parents=True, exist_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(f"waiting for another capsearch process that is writing {folder}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        remove_stale_temps(folder)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
