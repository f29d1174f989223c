"""A reusable crash-consistency harness: SIGKILL a capsearch command at random points, run it again,
and check that what it leaves equals an uninterrupted run's output.

A :class:`Command` names the CLI arguments, the commands that must have run before it (its inputs) and
what counts as its output: every data file under the artifacts root, compared byte for byte, while
metadata files that hold times or absolute paths (``*.json``, ``report.txt``, resume state) need only
exist and parse. A kill point is seeded: after the n-th new file appears under the artifacts root (n up
to the number of files an uninterrupted run leaves), plus up to 50 ms, so kills land between and during
writes rather than while the interpreter starts; each point reports whether the command was still
running. ``scripts/kill_harness.py`` runs the long version; ``tests/test_crash_consistency.py`` the
bounded one in CI. Later commands (the library, the service) add a :class:`Command` and reuse the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import serve_process

from core.locks import LOCKS

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("capsearch")
VOLATILE_SUFFIXES = (".json", ".pt")
VOLATILE_NAMES = ("report.txt", "history.jsonl")


@dataclass(frozen=True)
class Command:
    """One capsearch command under test."""

    name: str
    argv: tuple[str, ...]
    before: tuple[tuple[str, ...], ...] = ()


@dataclass
class Point:
    """One kill: after how many new files and how long after, whether the command was still running, and
    whether the rerun matched an uninterrupted run."""

    after_writes: int
    jitter_s: float
    killed_mid_run: bool
    consistent: bool
    differences: list[str] = field(default_factory=list)


environment = serve_process.environment
"""The child processes' environment: the artifacts root, this checkout first on the path, offline, 1 thread."""


def run(argv: tuple[str, ...], root: Path, timeout_s: float = 600) -> float:
    """Run ``capsearch argv`` to completion under ``root``; its wall time. Raises on a non-zero exit."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(CLI), *argv], env=environment(root), capture_output=True, text=True, timeout=timeout_s
    )
    if proc.returncode != 0:
        raise AssertionError(f"capsearch {' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return time.monotonic() - t0


def files_under(root: Path) -> int:
    """Files under ``root`` now (folders renamed or removed while it walks are skipped)."""
    return sum(len(files) for _, _, files in os.walk(root))


def kill_after_writes(argv: tuple[str, ...], root: Path, writes: int, jitter_s: float) -> bool:
    """Start ``capsearch argv``; once ``writes`` more files exist under ``root`` (temporary ones included)
    wait ``jitter_s`` and SIGKILL its whole process group. True if it was still running then."""
    before = files_under(root)
    proc = subprocess.Popen(
        [str(CLI), *argv],
        env=environment(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while proc.poll() is None and files_under(root) - before < writes:
        time.sleep(0.002)
    time.sleep(jitter_s)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def digest(root: Path) -> dict[str, str]:
    """What an output must equal: data files by content; metadata files by presence and valid JSON."""
    out: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        if rel.startswith(f"{LOCKS}/"):  # lock files are named by absolute paths, which differ per root
            continue
        if path.name in VOLATILE_NAMES or path.suffix in VOLATILE_SUFFIXES:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            out[rel] = "present"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def differences(expected: dict[str, str], got: dict[str, str]) -> list[str]:
    diff = [f"missing {k}" for k in expected.keys() - got.keys()]
    diff += [f"extra {k}" for k in got.keys() - expected.keys()]
    diff += [f"differs {k}" for k in expected.keys() & got.keys() if expected[k] != got[k]]
    return sorted(diff)


def inputs_and_clean_run(command: Command, workdir: Path) -> tuple[Path, Path]:
    """Two artifacts roots: ``base`` with the command's inputs, ``clean`` with one uninterrupted run."""
    base = workdir / f"{command.name}-base"
    base.mkdir(parents=True)
    for argv in command.before:
        run(argv, base)
    clean = workdir / f"{command.name}-clean"
    shutil.copytree(base, clean)
    run(command.argv, clean)
    return base, clean


def check_command(command: Command, workdir: Path, points: int, seed: int) -> list[Point]:
    """Kill ``command`` at ``points`` seeded random moments; each rerun's output must equal a clean run's."""
    base, clean = inputs_and_clean_run(command, workdir)
    made = max(1, files_under(clean) - files_under(base))  # files the command leaves: kills spread over them
    expected = digest(clean)
    rng = random.Random(seed)
    results = []
    for i in range(points):
        root = workdir / f"{command.name}-kill{i}"
        shutil.copytree(base, root)
        writes, jitter = rng.randint(1, made), rng.uniform(0, 0.05)
        killed = kill_after_writes(command.argv, root, writes, jitter)
        run(command.argv, root)
        diff = differences(expected, digest(root))
        results.append(Point(writes, round(jitter, 3), killed, not diff, diff))
        shutil.rmtree(root)
    return results


PREPARE = ("prepare", "synthetic", "--n", "60", "--seed", "0")
COMMANDS = {
    "prepare": Command("prepare", PREPARE),
    "embed": Command(
        "embed",
        ("embed", "--dataset", "synthetic", "--model", "capsearch-tiny", "--split", "all")
        + ("--precision", "fp32", "--device", "cpu", "--batch-size", "8"),
        before=(PREPARE,),
    ),
    "index": Command(
        "index",
        ("index", "--dataset", "synthetic", "--model", "capsearch-tiny", "--split", "test", "--kind", "hnsw"),
        before=(PREPARE,),
    ),
    "train": Command(
        "train",
        ("train", "--dataset", "synthetic", "--model", "capsearch-tiny", "--epochs", "2")
        + ("--batch-size", "16", "--precision", "fp32", "--device", "cpu", "--name", "k"),
        before=(PREPARE,),
    ),
}


def check_concurrent(command: Command, workdir: Path) -> list[str]:
    """Run ``command`` twice at once on one artifacts root: both must succeed and leave exactly what one
    uninterrupted run leaves. Returns the differences (empty when consistent)."""
    base, clean = inputs_and_clean_run(command, workdir)
    procs = [
        subprocess.Popen(
            [str(CLI), *command.argv],
            env=environment(base),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    failed = [
        f"exit {p.returncode}: {err[-2000:]}" for p, err in zip(procs, errors, strict=True) if p.returncode
    ]
    return failed + differences(digest(clean), digest(base))


# -- the service ------------------------------------------------------------------------------------------
SERVE = ("--dataset", "synthetic", "--model", "capsearch-tiny", "--device", "cpu", "--index", "hnsw")
SERVE_QUERIES = ("a red circle", "two blue squares + a green triangle", "a yellow star - a red circle")


def _answers(server: serve_process.Server) -> list[list[tuple[str, float]]]:
    out = []
    for query in SERVE_QUERIES:
        r = httpx.post(
            f"{server.url}/v1/search", json={"text": query, "k": 5, "direction": "both"}, timeout=30
        )
        r.raise_for_status()
        body = r.json()
        out.append([(h["id"], round(h["score"], 5)) for h in body["hits"] + body["caption_hits"]])
    return out


def _hammer(server: serve_process.Server, stop: threading.Event, seen: list[int]) -> None:
    """Distinct queries back to back until ``stop`` (the server may die under it)."""
    n = 0
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            n += 1
            try:
                seen.append(
                    client.get(f"{server.url}/v1/search", params={"q": f"load {n} circles"}).status_code
                )
            except httpx.TransportError:
                return


def check_serve(workdir: Path, seed: int) -> list[str]:
    """SIGKILL ``capsearch serve`` while it first loads (embeds and indexes) and again under load; each
    restart must come back ready with a clean start's answers and files. Returns the differences."""
    rng = random.Random(seed)
    base = workdir / "serve-base"
    run(PREPARE, base)
    clean, root = workdir / "serve-clean", workdir / "serve-killed"
    shutil.copytree(base, clean)
    shutil.copytree(base, root)
    with serve_process.serving(clean, *SERVE) as server:
        expected = _answers(server)
    files = digest(clean)
    problems: list[str] = []

    before = files_under(root)
    loading = serve_process.start(root, *SERVE)
    deadline = time.monotonic() + 300
    writes = rng.randint(1, max(1, files_under(clean) - before))
    while files_under(root) - before < writes and loading.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)  # kill once the n-th file of the embedding caches and indexes appears
    time.sleep(rng.uniform(0, 0.05))
    if loading.proc.poll() is not None:
        problems.append("the first start ended by itself before the kill")
    loading.kill()
    with serve_process.serving(root, *SERVE) as server:
        if _answers(server) != expected:
            problems.append("after a kill while loading: different answers")
        stop, seen = threading.Event(), []
        threads = [threading.Thread(target=_hammer, args=(server, stop, seen)) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.5, 1.5))
        server.kill()
        stop.set()
        for t in threads:
            t.join()
        if not seen or set(seen) != {200}:
            problems.append(f"under load before the kill: statuses {sorted(set(seen))}, {len(seen)} requests")
    with serve_process.serving(root, *SERVE) as server:
        if _answers(server) != expected:
            problems.append("after a kill under load: different answers")
    return problems + differences(files, digest(root))
