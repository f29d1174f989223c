"""Keeping a library current with file-system events (the ``watchdog`` package, the ``watch`` extra).

Events only mark the library dirty; an update (a full incremental rescan: stats, then hashing and
embedding only what changed) runs once events have been quiet for ``quiet_s``, or ``max_wait_s`` after the
first of a burst that does not stop, so a burst of a thousand new photos is embedded in batches by a few
updates rather than one by one, and a single new photo is searchable about ``quiet_s`` + its embedding
time after it is written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from core.library.catalogue import ModelKey
from core.library.home import LibraryError
from core.library.library import Library
from core.library.update import DEFAULT_BATCH, ImageEncoder, UpdateStats, update
from core.progress import Reporter, ensure

if TYPE_CHECKING:
    from core.models.loading import LoadedModel

QUIET_S = 0.5
MAX_WAIT_S = 3.0


def _observer(roots: list[str], touched: Callable[[], None]) -> Any:
    try:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer
    except ImportError as exc:
        raise LibraryError(
            "--watch needs the watchdog package", hint="install it: pip install 'capsearch[watch]'"
        ) from exc

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type not in ("opened", "closed_no_write"):
                touched()

    observer = Observer()
    for root in roots:
        observer.schedule(Handler(), root, recursive=True)
    return observer


def watch(
    lib: Library,
    lm: LoadedModel,
    model: ModelKey,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    on_update: Callable[[UpdateStats], None] | None = None,
    quiet_s: float = QUIET_S,
    max_wait_s: float = MAX_WAIT_S,
    batch_size: int = DEFAULT_BATCH,
    encode: ImageEncoder | None = None,
) -> None:
    """Update ``lib`` after every burst of file-system events until ``stop`` is set (or Ctrl+C), each time
    as :func:`~core.library.update.update` with ``batch_size`` and ``encode`` (the same engine and backend as
    the first update)."""
    reporter = ensure(reporter)
    stop = stop or threading.Event()
    lock = threading.Lock()
    pending: dict[str, float] = {}

    def touched() -> None:
        with lock:
            now = time.monotonic()
            pending.setdefault("first", now)
            pending["last"] = now

    observer = _observer(lib.catalogue.roots(), touched)
    observer.start()
    try:
        while not stop.wait(0.1):
            with lock:
                now = time.monotonic()
                due = bool(pending) and (
                    now - pending["last"] >= quiet_s or now - pending["first"] >= max_wait_s
                )
                if due:
                    pending.clear()
            if due:
                stats = update(lib, lm, model, reporter, batch_size, encode)
                if on_update is not None:
                    on_update(stats)
    finally:
        observer.stop()
        observer.join()
