"""The per-folder write lock: a second writer waits for the first, and a killed holder frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.locks import exclusive, lock_file

HOLD = """
import sys, time
from pathlib import Path
from core.locks import exclusive, lock_file
with exclusive(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold(folder: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_waits_for_the_first(tmp_path):
    holder = hold(tmp_path / "f", 1.0)
    told: list[str] = []
    t0 = time.monotonic()
    with exclusive(tmp_path / "f", on_wait=told.append):
        waited = time.monotonic() - t0
    holder.wait()
    assert waited > 0.5 and told and "another capsearch process" in told[0]


def test_a_killed_holder_releases_the_lock(tmp_path):
    holder = hold(tmp_path / "f", 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    t0 = time.monotonic()
    with exclusive(tmp_path / "f"):
        pass
    assert time.monotonic() - t0 < 5


def test_free_lock_is_taken_at_once_without_a_message(tmp_path):
    told: list[str] = []
    with exclusive(tmp_path / "new" / "folder", on_wait=told.append):
        assert lock_file(tmp_path / "new" / "folder").exists()
        assert list((tmp_path / "new" / "folder").iterdir()) == []  # the folder holds only its own files
    assert told == []
