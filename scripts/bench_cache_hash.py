"""What verifying an embedding cache costs: sha256 of Flickr8k-sized arrays against loading them.

Writes artifacts/results/bench_cache_hash.json. The arrays are random (hashing speed does not depend on
the values), shaped as a 512-d model's cache of the test split (1,000 images, 5,000 captions) and of the
whole set (8,091 images, 40,455 captions).

    .venv/bin/python scripts/bench_cache_hash.py
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from benchlib import REPO, commit, machine_info

from core.atomic import file_sha256, save_npy, write_json
from core.evaluation.latency import percentile

SHAPES = {"flickr8k test split": (1000, 5000), "flickr8k all images": (8091, 40455)}
DIM, REPEATS = 512, 7


def timed(call: Callable[[], object], repeats: int = REPEATS) -> list[float]:
    """Wall times in ms of ``repeats`` calls."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (images, captions) in SHAPES.items():
            files = [Path(tmp) / f"{name}-{side}.npy" for side in ("images", "captions")]
            for path, n in zip(files, (images, captions), strict=True):
                save_npy(path, rng.random((n, DIM), dtype=np.float32))
            hashed = timed(lambda files=files: [file_sha256(f) for f in files])
            loaded = timed(lambda files=files: [np.load(f) for f in files])
            rows[name] = {
                "megabytes": round(sum(f.stat().st_size for f in files) / 1e6, 1),
                "sha256_ms_p50": round(percentile(hashed, 50), 1),
                "load_ms_p50": round(percentile(loaded, 50), 1),
            }
            print(name, rows[name])
    write_json(
        REPO / "artifacts" / "results" / "bench_cache_hash.json",
        {"commit": commit(), "machine": machine_info(), "repeats": REPEATS, "dim": DIM, "caches": rows},
    )


if __name__ == "__main__":
    main()
