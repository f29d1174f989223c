"""Under tmux the app sends textual-image's terminal queries nowhere (tmux makes the Kitty query the
pane title); on a plain terminal it still asks (auto-detection keeps working)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CODE = "import tui.widgets.image_preview as p; print('class', p.ImageWidget.__name__, flush=True)"


def run_on_a_pty(env_extra: dict[str, str]) -> str:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 960, 640))  # rows, cols, pixels
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "CAPSEARCH_PREVIEW")} | env_extra
    proc = subprocess.Popen(
        [sys.executable, "-c", CODE], stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(master)
    return out.decode("utf-8", "replace")


@pytest.mark.parametrize(("env", "probes"), [({"TMUX": "/tmp/tmux-0/default,1,0"}, False), ({}, True)])
def test_terminal_is_probed_only_outside_tmux(env, probes):
    out = run_on_a_pty(env)
    assert ("\x1b_G" in out) is probes, repr(out[:300])
    if not probes:
        assert "class HalfcellImage" in out
