"""``capsearch serve`` as a real process: uvicorn bound to 127.0.0.1 on a free port, under an artifacts
root of its own (used by tests/serve/test_serve_process.py and the crash harness)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("capsearch")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CAPSEARCH_ARTIFACTS=str(root),
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        **extra,
    )
    if "CAPSEARCH_TOKEN" not in extra:
        env.pop("CAPSEARCH_TOKEN", None)
    return env


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 240) -> None:
        """Poll /readyz until it answers 200; fail with the server's log if it exits or takes too long."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", headers=self.headers, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def start(root: Path, *args: str, port: int | None = None, **env: str) -> Server:
    """Start ``capsearch serve ARGS`` (its own process group); stdout and stderr go to a log file."""
    port = port or free_port()
    log = root.parent / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(CLI), "serve", "--port", str(port), *args],
            env=environment(root, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(proc, port, log, env.get("CAPSEARCH_TOKEN"))


@contextmanager
def serving(root: Path, *args: str, **env: str) -> Iterator[Server]:
    """A started, ready server, killed when the block ends."""
    server = start(root, *args, **env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()
