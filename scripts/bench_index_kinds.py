"""Every registered index kind on clustered unit vectors, and what ``auto`` chooses and tunes.

For each kind: build seconds (wall and CPU), serialised bytes against the registry's memory estimate, and
for each knob value recall@10 against exact search on fresh queries and the median single-query latency.
Then ``auto`` under shrinking memory budgets: the kind chosen, the knob tuned to the target recall on
held-out queries, and the recall that knob gives on fresh queries.

Writes ``artifacts/results/index_kinds.json``. Run under the shared lock on the shared machine::

    flock /work/bench.lock .venv/bin/python scripts/bench_index_kinds.py --count 20000 --dim 64
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from typing import Any

import numpy as np
from benchlib import commit, machine_info

from core.atomic import write_json
from core.index.auto import AutoSpec
from core.index.ivf_kinds import auto_nlist
from core.index.kind_base import IndexSpec
from core.index.registry import make_spec
from core.index.vector_index import VectorIndex, neighbour_recall
from core.paths import results_dir

KNOBS = {"ef_search": (8, 16, 32, 64, 128), "nprobe": (1, 4, 8, 16, 32, 64)}


def clustered(n: int, d: int, seed: int, clusters: int = 200) -> np.ndarray:
    """Unit vectors around fixed Gaussian centres (the same centres for every seed)."""
    centres = np.random.default_rng(0).standard_normal((clusters, d))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_kind(spec: IndexSpec, x: np.ndarray, q: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    ids = [str(i) for i in range(len(x))]
    wall, cpu = time.perf_counter(), cpu_s()
    index = VectorIndex.build(x, spec, ids, "bench", seed=0)
    row: dict[str, Any] = {
        "spec": index.spec.to_dict(),
        "label": index.spec.label(),
        "build_s": round(time.perf_counter() - wall, 3),
        "build_cpu_s": round(cpu_s() - cpu, 3),
        "bytes": index.nbytes,
        "estimated_bytes": index.spec.memory_bytes(len(x), x.shape[1]),
    }
    knob = index.spec.knob()
    values = [v for v in KNOBS.get(knob.name, ()) if v <= index.spec.knob_range()[1]] if knob else [0]
    points = []
    for value in values:
        trial = index.measure(value, q, truth) if knob else index.measure(0, q, truth)
        points.append(trial.to_dict())
    row["knob"] = knob.name if knob else None
    row["points"] = points
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    start_load, start = os.getloadavg()[0], time.perf_counter()
    x, q = clustered(args.count, args.dim, 1), clustered(args.queries, args.dim, 2)
    truth = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    kinds = {
        name: measure_kind(make_spec(name).resolve(args.count, args.dim), x, q, truth)
        for name in ("exact", "hnsw", "hnsw-sq", "ivf-flat", "ivf-pq")
    }
    autos = []
    n, d = args.count, args.dim
    for budget in (
        2**34,
        int(make_spec("hnsw-sq").memory_bytes(n, d) * 1.05),
        int(make_spec("ivf-flat", nlist=auto_nlist(n)).memory_bytes(n, d) * 1.05),
        2_000_000,
    ):
        auto = AutoSpec(max_memory=budget, target_recall=0.95)
        index = VectorIndex.build(x, auto, [str(i) for i in range(n)], "bench", queries=clustered(500, d, 3))
        record = dict(index.meta["auto"])
        record["fresh_recall"] = round(neighbour_recall(index.search(q, 10)[1], truth), 4)
        autos.append(record)
    out = {
        "what": "index kinds on clustered unit vectors; recall@10 vs exact on fresh queries; auto choice",
        "count": n,
        "dim": d,
        "queries": args.queries,
        "kinds": kinds,
        "auto": autos,
        "wall_s": round(time.perf_counter() - start, 2),
        "cpu_s": round(cpu_s(), 2),
        "load_average_start": start_load,
        "load_average_end": os.getloadavg()[0],
        "machine": machine_info(),
        "commit": commit(),
        "note": "shared 2-vCPU machine: latencies and build times vary with the other helpers' load",
    }
    path = results_dir() / "index_kinds.json"
    write_json(path, out)
    print(path)


if __name__ == "__main__":
    main()
