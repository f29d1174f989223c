"""Benchmark plumbing shared by the scripts: machine description, commit label, a results file's runs log.

The scripts run as ``python scripts/<name>.py``, so this folder is on ``sys.path`` and they import it as
``benchlib``. Latency percentiles come from :mod:`core.evaluation.latency`, as in evaluation results.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FLICKR8K = REPO.parent / "shared" / "data" / "flickr8k"


def machine_info() -> dict[str, Any]:
    """CPU, core count, torch threads, load and library versions, for the results JSON."""
    import faiss
    import numpy as np
    import open_clip
    import PIL
    import torch

    fields: dict[str, str] = {}  # the first CPU's
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return {
        "cpu": fields.get("model name", platform.processor()),
        # the generation, where the name does not say it: AMD EPYC 25/1 Zen 3, 26/2 Zen 5
        "cpu_family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "faiss": faiss.__version__,
        },
    }


def commit() -> str:
    """The checked-out commit, with ``-dirty`` when core/ or scripts/ have uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    try:
        head, dirty = (
            git("rev-parse", "--short", "HEAD"),
            git("status", "--porcelain", "--", "core", "scripts"),
        )
    except OSError:
        return "unknown"
    return (head or "unknown") + ("-dirty" if dirty else "")


def clock(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall seconds and this process's CPU seconds (every thread)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def rates(items: int, timings: list[tuple[float, float]]) -> dict[str, Any]:
    """Items/s over the mean wall time of ``timings`` ((wall, cpu) seconds per repeat), and each repeat's."""
    wall = sum(t[0] for t in timings) / len(timings)
    return {
        "images_per_s": round(items / wall, 2),
        "seconds": [round(t[0], 2) for t in timings],
        "cpu_seconds": [round(t[1], 2) for t in timings],
    }


def save_png(fig: Any, path: Path) -> None:
    """Write a matplotlib figure to ``path`` as PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    from core.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def previous_results(out: Path) -> dict[str, Any]:
    """The results file ``out`` as written before ({} when it is missing or unreadable)."""
    try:
        found = json.loads(out.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def runs_log(out: Path, run: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs kept in the results file ``out`` (none when it is missing or unreadable), then ``run``."""
    runs = previous_results(out).get("runs", [])
    return [*runs, {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), **run}]


def flickr8k_dataset(name: str = "flickr8k", source: Path = FLICKR8K) -> Any:
    """The prepared dataset ``name``, prepared from the Flickr8k folder ``source`` first if it is missing."""
    from core.data.records import load_dataset
    from core.errors import DatasetError

    try:
        return load_dataset(name)
    except DatasetError:
        from core.data.prepare import prepare_flickr8k

        return prepare_flickr8k(source, name=name)
