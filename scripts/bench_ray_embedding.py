"""Image embedding throughput on Ray (a local Ray on 2 CPUs) against the single-process engine.

Same images (the first ``--images`` of a Flickr8k prepared under the artifacts root), same model
(``--model``, default ViT-B-32 seeded random init; ``--precision``, default fp32), same batches of
``--batch-size``. Local: ``core.embed.engine.encode_images``
with the model already loaded, torch on every core (what ``capsearch embed`` runs for a split's images).
Ray: ``core.embed.ray_engine.run_units`` on the same batches, as ``capsearch embed --engine ray`` runs
them, once with two 1-CPU actors and once with one 2-CPU actor. A Ray run's time counts from submitting
the work to the last vector, so it includes starting the actors and loading a model in each (the
``ray.init`` time is given apart). Its fixed cost is measured by a run of one batch per actor; the
marginal rate (the extra images over the extra time of the full run) is the rate once the actors are up.
Inside the actors, each unit's encoding is timed too (``in_actor_images_per_s``: one actor's rate, free of
the actors' start). The local engine runs one untimed warm-up batch first. The largest
difference between the Ray and local vectors is recorded as a check.

Usage: python scripts/bench_ray_embedding.py [--images 256] [--batch-size 32] [--model M] [--precision P]
(under flock /work/bench.lock)
Writes artifacts/results/ray_embedding.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import commit, flickr8k_dataset, machine_info, runs_log  # noqa: E402

from core.atomic import write_json  # noqa: E402
from core.embed.engine import encode_images  # noqa: E402
from core.embed.fp32_fast import vectors_label  # noqa: E402
from core.embed.ray_engine import ModelSpec, RayOptions, UnitEncoder, import_ray, run_units  # noqa: E402
from core.models.loading import LoadedModel, load_model  # noqa: E402
from core.paths import results_dir  # noqa: E402

RAY_CPUS = 2


def _cpu_seconds() -> float:
    """CPU time of this process and of its waited-for children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _proc_stats() -> dict[int, tuple[int, float]]:
    """Every process's (parent pid, CPU seconds so far) from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return stats


class DescendantsCpu:
    """CPU seconds of this process's descendants (Ray's GCS, raylet and workers), sampled every
    ``every_s`` in a thread: the last sample of each process counts (a process that ends between two
    samples loses at most ``every_s`` of CPU)."""

    def __init__(self, every_s: float = 0.25) -> None:
        self.every_s, self.seen, self._stop = every_s, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(self.every_s):
            stats = _proc_stats()
            ours, changed = {me}, True
            while changed:
                more = {pid for pid, (ppid, _) in stats.items() if ppid in ours} - ours
                ours |= more
                changed = bool(more)
            for pid in ours - {me}:
                self.seen[pid] = stats[pid][1]

    def __enter__(self) -> DescendantsCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def total(self) -> float:
        return sum(self.seen.values())


class TimedEncoder(UnitEncoder):
    """The engine's actor, also returning the seconds each call (one unit) took inside the actor."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = super().__call__(batch)
        out["encode_s"] = np.full(len(out["unit"]), (time.perf_counter() - start) / len(out["unit"]))
        return out


def local_run(lm: LoadedModel, paths: list[Path], batch_size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The local engine on ``paths``, after one untimed warm-up batch (first-call setup)."""
    encode_images(lm, paths[:batch_size], batch_size=batch_size, workers=0)
    cpu, start = _cpu_seconds(), time.perf_counter()
    vectors, failed = encode_images(lm, paths, batch_size=batch_size, workers=0)
    wall = time.perf_counter() - start
    assert not failed, failed
    cpu = _cpu_seconds() - cpu
    return vectors, {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 2),
        "images_per_s": round(len(paths) / wall, 2),
        "cpu_s_per_image": round(cpu / len(paths), 4),
    }


def ray_pass(
    ray: Any, lm: LoadedModel, paths: list[Path], batch_size: int, options: RayOptions, model: str
) -> tuple[np.ndarray, float, float, float]:
    """One Ray run of ``paths`` in batches of ``batch_size``: the vectors, its wall time and its first
    unit's arrival (both counted from submitting the work: actor start and model load included), and the
    seconds the actors spent encoding (summed over actors)."""
    units = [
        {"unit": n, "kind": "images", "payload": json.dumps([str(p) for p in paths[s : s + batch_size]])}
        for n, s in enumerate(range(0, len(paths), batch_size))
    ]
    out = np.zeros((len(paths), lm.embed_dim), np.float32)
    first = None
    encode_s = 0.0
    start = time.perf_counter()
    for row in run_units(ray, units, ModelSpec.of(model, None, lm), options, TimedEncoder):
        encode_s += float(row["encode_s"])
        n = int(row["unit"])
        vectors = np.frombuffer(row["vectors"], dtype=np.float32).reshape(-1, lm.embed_dim)
        out[n * batch_size : n * batch_size + len(vectors)] = vectors
        first = time.perf_counter() - start if first is None else first
    return out, time.perf_counter() - start, first or 0.0, encode_s


def ray_cpu(measure: Any) -> tuple[Any, float]:
    """``measure()`` and the CPU seconds it cost: this process's and every Ray process's beside it."""
    own = time.process_time()
    with DescendantsCpu() as ray_side:
        before = dict(ray_side.seen)
        result = measure()
    spent = time.process_time() - own + ray_side.total() - sum(before.values())
    return result, spent


def ray_run(
    ray: Any,
    lm: LoadedModel,
    paths: list[Path],
    batch_size: int,
    actors: int,
    cpus_per_actor: int,
    model: str,
) -> tuple[np.ndarray, dict[str, Any]]:
    """A warm-up-sized run (one batch per actor: the fixed cost of a run), then the full run; the
    marginal rate is the extra images over the extra time."""
    options = RayOptions(actors=actors, cpus_per_actor=cpus_per_actor, batch_size=batch_size)
    few = paths[: actors * batch_size]
    (_, fixed_s, _, _), fixed_cpu = ray_cpu(lambda: ray_pass(ray, lm, few, batch_size, options, model))
    (vectors, wall, first_s, encode_s), cpu = ray_cpu(
        lambda: ray_pass(ray, lm, paths, batch_size, options, model)
    )
    extra = len(paths) - len(few)
    marginal = extra / (wall - fixed_s) if wall > fixed_s else None
    return vectors, {
        "actors": actors,
        "cpus_per_actor": cpus_per_actor,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 2),
        "images_per_s": round(len(paths) / wall, 2),
        "cpu_s_per_image": round(cpu / len(paths), 4),
        "first_unit_s": round(first_s, 3),
        "fixed_run_s": round(fixed_s, 3),
        "fixed_run_cpu_s": round(fixed_cpu, 2),
        "marginal_images_per_s": round(marginal, 2) if marginal else None,
        "marginal_cpu_s_per_image": round((cpu - fixed_cpu) / extra, 4) if extra else None,
        # inside the actors, the full run: one actor's rate (images over the actors' summed encoding time)
        "in_actor_images_per_s": round(len(paths) / encode_s, 2),
    }


def ratios(run: dict[str, Any], local: dict[str, Any]) -> None:
    """Ray's cost against the local engine's: wall time (>1: Ray slower), CPU per image, marginal rate."""
    run["overhead_ratio"] = round(run["wall_s"] / local["wall_s"], 3)
    run["cpu_ratio"] = round(run["cpu_s_per_image"] / local["cpu_s_per_image"], 3)
    if run["marginal_images_per_s"]:
        run["marginal_overhead_ratio"] = round(local["images_per_s"] / run["marginal_images_per_s"], 3)
    if run["marginal_cpu_s_per_image"]:
        run["marginal_cpu_ratio"] = round(run["marginal_cpu_s_per_image"] / local["cpu_s_per_image"], 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="ViT-B-32", help="a name or checkpoint folder")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ray = import_ray()
    data = flickr8k_dataset()
    paths = [data.image_path(r) for r in data.split("test")[: args.images]]
    machine_start = machine_info()
    lm = load_model(args.model, device="cpu", precision=args.precision)
    reference, local_before = local_run(lm, paths, args.batch_size)

    start = time.perf_counter()
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, logging_level=logging.WARNING)
    init_s = time.perf_counter() - start
    runs = []
    try:
        for actors, cpus_per_actor in ((2, 1), (1, 2)):
            vectors, run = ray_run(ray, lm, paths, args.batch_size, actors, cpus_per_actor, args.model)
            run["max_abs_diff_vs_local"] = float(np.abs(vectors - reference).max())
            runs.append(run)
    finally:
        ray.shutdown()
    _, local_after = local_run(lm, paths, args.batch_size)
    local = {  # before and after the Ray runs: this shared machine's load drifts
        k: round((local_before[k] + local_after[k]) / 2, 4) for k in local_before
    }
    for run in runs:
        ratios(run, local)

    out = results_dir() / "ray_embedding.json"
    run_record = {
        "commit": commit(),
        "model": lm.model_id,
        "precision": lm.precision,
        "computed_in": vectors_label(lm),
        "images": len(paths),
        "dataset": f"{data.name} test split, first {len(paths)} images",
        "batch_size": args.batch_size,
        "ray_version": ray.__version__,
        "ray_init_s": round(init_s, 3),
        "local": local,
        "local_before_after": [local_before, local_after],
        "ray": runs,
        "machine_at_start": machine_start,
        "load_average_at_end": list(os.getloadavg()),
    }
    result = {
        "what": "image embedding throughput, Ray (a local Ray on 2 CPUs) vs the single-process engine",
        "gpu": "not measured: no GPU machine was lent to this task",
        "note": "shared 2-core machine (other helpers' work runs beside this, see the load averages); the "
        "local engine's time excludes loading the model (and one warm-up batch), a Ray run's includes "
        "starting its actors and loading a model in each; Ray CPU counts every Ray process",
        "runs": runs_log(out, run_record),
    }
    write_json(out, result)
    print(json.dumps({k: run_record[k] for k in ("local", "ray", "ray_init_s")}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
