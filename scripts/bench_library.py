"""Benchmark photo libraries (issue 15): build, rescans, moves, deletes, SIGKILLs, memory, search latency.

On a generated library (default 20,000 small varied JPEGs in nested year/month/event folders, with EXIF
dates and camera models) and on the Flickr8k images as a second library (read-only: the library lives
under the artifacts root). Steps, each timed and written to the JSON as soon as it is done:

- full build (images/s; model loading apart); a rescan with nothing changed (files/s; goal < 5 s);
- 1% new files: exactly those embedded; the rescan's time against (their embedding time alone + the
  no-change rescan), goal <= 1.1x;
- move/rename 1,000 files (goal 0 embedded); delete 1,000 (0 embedded, gone from the index and results);
- 3 SIGKILLs at random points of ``capsearch library add`` on a fresh root, each followed by another run,
  then a last run: vectors equal the uninterrupted build's (max abs difference);
- peak RSS of a process that rescans, and of one that opens the library and searches; search p50;
- HNSW with tombstones: recall@10 against exact and latency as the tombstoned fraction grows (the
  rebuild threshold in core.index.mutable).

The machine is shared (2 vCPUs, other work running): every step records the 1-minute load average.
Usage: ``python scripts/bench_library.py [--n 20000] [--model capsearch-tiny] [--skip-flickr]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import FLICKR8K, REPO, commit, machine_info
from PIL import Image, ImageDraw

CAMERAS = ["Canon EOS 80D", "NIKON D750", "Pixel 7", "iPhone 13", "SONY ILCE-7M3"]


# -- a generated library -----------------------------------------------------------------------------------
def _photo(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A small varied picture: a two-colour gradient with a few shapes."""
    w, h = size
    a = np.array([rng.randrange(256) for _ in range(3)], np.float32)
    b = np.array([rng.randrange(256) for _ in range(3)], np.float32)
    t = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)[:, None]
    ramp = (a * (1 - t) + b * t).astype(np.uint8)
    pixels = (
        np.broadcast_to(ramp[None, :, :], (h, w, 3))
        if len(ramp) == w
        else np.broadcast_to(ramp[:, None, :], (h, w, 3))
    )
    image = Image.fromarray(np.ascontiguousarray(pixels))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 5)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        box = (x0, y0, x0 + rng.randint(4, w // 2), y0 + rng.randint(4, h // 2))
        fill = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


def write_generated(path: Path, seed: int) -> None:
    rng = random.Random(seed)
    image = _photo(rng, (rng.choice([96, 112, 128]), rng.choice([72, 84, 96])))
    exif = Image.Exif()
    year, month = 2005 + seed % 20, 1 + (seed // 20) % 12
    exif.get_ifd(0x8769)[36867] = f"{year}:{month:02d}:{1 + seed % 28:02d} {seed % 24:02d}:{seed % 60:02d}:00"
    exif[272] = CAMERAS[seed % len(CAMERAS)]
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=85, exif=exif.tobytes())


def generated_path(root: Path, seed: int) -> Path:
    year, month = 2005 + seed % 20, 1 + (seed // 20) % 12
    return root / f"{year}" / f"{month:02d}" / f"event-{seed % 7}" / f"IMG_{seed:06d}.jpg"


def generate(root: Path, n: int, start: int = 0) -> list[Path]:
    paths = []
    for seed in range(start, start + n):
        path = generated_path(root, seed)
        write_generated(path, seed)
        paths.append(path)
    return paths


# -- plumbing --------------------------------------------------------------------------------------------
def load1() -> float:
    return round(os.getloadavg()[0], 2)


def env(root: Path) -> dict[str, str]:
    return {**os.environ, "CAPSEARCH_ARTIFACTS": str(root), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def child_rss(root: Path, code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter on artifacts ``root``; it prints a JSON dict; add its peak RSS."""
    wrapped = (
        code
        + "\nimport resource, json as _j\nprint(_j.dumps({**OUT, 'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", wrapped], env=env(root), capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


SCAN_CHILD = """
import time
from core.library.library import Library
from core.library.update import UpdateStats, scan
from core.progress import Reporter
lib = Library.open({name!r}); t = time.perf_counter(); stats = UpdateStats(); scan(lib, Reporter(), stats)
OUT = {{"rescan_s": time.perf_counter() - t, "files": stats.files, "hashed": stats.hashed}}
"""

SEARCH_CHILD = """
import time, numpy as np
from core.search.library_search import LibrarySearcher
t = time.perf_counter(); s = LibrarySearcher.open({name!r}, device="cpu"); open_s = time.perf_counter() - t
queries = ["a dog on a beach", "red circle", "blue sky", "a green square", "sunset", "two people", "night city",
           "a yellow ball", "snow", "a cat"] * 5
times, index_times = [], []
for q in queries:
    t = time.perf_counter(); s.search_text(q + " " + str(len(times)), 10); times.append(time.perf_counter() - t)
vec = s.query_vector("a dog")
for _ in range(50):
    t = time.perf_counter(); s.index.search(vec, 10); index_times.append(time.perf_counter() - t)
OUT = {{"open_s": open_s, "search_p50_ms": float(np.median(times) * 1e3), "search_p95_ms": float(np.percentile(times, 95) * 1e3),
       "index_search_p50_ms": float(np.median(index_times) * 1e3), "queries": len(times), "index": s.index_kind, "size": s.size}}
"""


class Bench:
    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        self.out = out
        self.result: dict[str, Any] = {
            "commit": commit(),
            "machine": machine_info(),
            "note": "shared machine: other jobs ran during the benchmark; see each step's load1",
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "steps": {},
        }

    def record(self, step: str, values: dict[str, Any]) -> None:
        if self.result["args"]["reuse"] and step in self.result["steps"]:
            self.result.setdefault("earlier", {})[step] = self.result["steps"][step]
        self.result["steps"][step] = {**values, "load1": load1(), "commit": self.result["commit"]}
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.result, indent=2) + "\n")
        print(step, json.dumps(self.result["steps"][step]), flush=True)


# -- the steps ---------------------------------------------------------------------------------------------
def build_steps(bench: Bench, work: Path, n: int, model: str, reuse: bool) -> None:
    from core.library.library import add_folders, model_key
    from core.models.loading import load_model

    photos = work / "photos"
    if not reuse:
        t = time.perf_counter()
        generate(photos, n)
        bench.record("generate", {"files": n, "seconds": time.perf_counter() - t})

    t = time.perf_counter()
    lm = load_model(model, device="cpu", precision="fp32")
    load_s = time.perf_counter() - t
    key = model_key(model, lm)
    lib = add_folders("gen", [photos], index_kind="auto")
    if not reuse:
        full_build(bench, lib, lm, key, load_s)
    change_steps(bench, lib, lm, key, load_s, photos, n)
    lib.close()


def full_build(bench: Bench, lib: Any, lm: Any, key: Any, load_s: float) -> None:
    from core.library.update import update

    t = time.perf_counter()
    stats = update(lib, lm, key)
    total = time.perf_counter() - t
    bench.record(
        "full_build",
        {
            "model": key.name,
            "model_load_s": load_s,
            "seconds": total,
            "images_per_s": stats.embedded / total,
            "embed_images_per_s": stats.embedded / max(stats.embed_s, 1e-9),
            **stats.to_dict(),
        },
    )


def change_steps(bench: Bench, lib: Any, lm: Any, key: Any, load_s: float, photos: Path, n: int) -> None:
    from core.embed.engine import encode_images
    from core.library.update import update, vectors_by_path

    t = time.perf_counter()  # warm the model up (first-call kernel set-up), stated apart like its loading
    encode_images(lm, sorted(photos.rglob("*.jpg"))[:64], 32)
    warmup_s = time.perf_counter() - t
    t = time.perf_counter()
    stats = update(lib, lm, key)
    nochange = time.perf_counter() - t
    bench.record(
        "rescan_no_change",
        {
            "seconds": nochange,
            "files_per_s": stats.files / nochange,
            "goal_s": 5.0,
            "met": nochange < 5.0,
            **stats.to_dict(),
        },
    )

    new = generate(
        photos / f"new-{time.time_ns()}", n // 100, start=10_000_000 + len(list(photos.glob("new*"))) * n
    )
    t = time.perf_counter()
    stats = update(lib, lm, key)
    rescan = time.perf_counter() - t
    t = time.perf_counter()
    encode_images(lm, new, 32)
    alone = time.perf_counter() - t
    bound = 1.1 * (alone + nochange)
    bench.record(
        "add_1_percent",
        {
            "new_files": len(new),
            "embedded": stats.embedded,
            "exactly_those": stats.embedded == len(new),
            "rescan_s": rescan,
            "embedding_alone_s": alone,
            "no_change_rescan_s": nochange,
            "ratio": rescan / (alone + nochange),
            "goal_ratio": 1.1,
            "met": rescan <= bound,
            "model_load_s_apart": load_s,
            "model_warmup_s_apart": warmup_s,
            **stats.to_dict(),
        },
    )

    rng = random.Random(0)
    files = sorted(photos.rglob("*.jpg"))
    moved = rng.sample(files, min(1000, len(files) // 4))
    for i, path in enumerate(moved):
        dest = photos / "moved" / f"{i % 10}" / (("renamed-" if i % 2 else "") + path.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        path.rename(dest)
    t = time.perf_counter()
    stats = update(lib, lm, key)
    bench.record(
        "move_rename_1000", {"seconds": time.perf_counter() - t, "goal_embedded": 0, **stats.to_dict()}
    )

    files = sorted(photos.rglob("*.jpg"))
    before = vectors_by_path(lib, key)
    deleted = rng.sample(files, min(1000, len(files) // 4))
    for path in deleted:
        path.unlink()
    t = time.perf_counter()
    stats = update(lib, lm, key)
    seconds = time.perf_counter() - t
    index = lib.index(key, lib.store(key))
    live = set(index.live_ids().tolist())
    indexed_paths = {r.path for r in lib.catalogue.files_by_id(live).values()}
    top_hits_of_deleted = 0
    for path in deleted[:50]:  # searching with a deleted photo's own vector must not find it
        _, ids = index.search(before[str(path)], 10)
        top_hits_of_deleted += sum(
            lib.catalogue.files_by_id(ids.tolist())[i].path == str(path) for i in ids.tolist()
        )
    bench.record(
        "delete_1000",
        {
            "seconds": seconds,
            "goal_embedded": 0,
            "deleted_still_indexed": len({str(p) for p in deleted} & indexed_paths),
            "deleted_found_by_own_vector": top_hits_of_deleted,
            **stats.to_dict(),
        },
    )


def kill_steps(bench: Bench, work: Path, model: str) -> None:
    """SIGKILL ``library add`` 3 times at random moments on a fresh root, then finish; compare vectors with
    an uninterrupted build over the same (final) folder."""
    from core.library.library import Library
    from core.library.update import vectors_by_path

    photos = work / "photos"
    cli = Path(sys.executable).with_name("capsearch")
    argv = [str(cli), "library", "add", str(photos), "--name", "gen", "--model", model]
    argv += ["--device", "cpu", "--precision", "fp32"]
    rng = random.Random(1)
    killed_root = work / "killed"
    points = []
    for _ in range(3):
        proc = subprocess.Popen(
            argv,
            env=env(killed_root),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait = rng.uniform(10, 60)
        try:
            proc.wait(timeout=wait)
            points.append({"after_s": wait, "killed_mid_run": False})
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            points.append({"after_s": round(wait, 2), "killed_mid_run": True})
    t = time.perf_counter()
    subprocess.run(argv, env=env(killed_root), check=True, capture_output=True)
    resume_s = time.perf_counter() - t
    os.environ["CAPSEARCH_ARTIFACTS"] = str(killed_root)
    with Library.open("gen") as lib:
        got = vectors_by_path(lib, lib.active)  # type: ignore[arg-type]
    os.environ["CAPSEARCH_ARTIFACTS"] = str(work / "artifacts")
    with Library.open("gen") as lib:
        want = vectors_by_path(lib, lib.active)  # type: ignore[arg-type]
    common = sorted(set(got) & set(want))
    diff = max((float(np.abs(got[p] - want[p]).max()) for p in common), default=None)
    bench.record(
        "sigkill_3_then_resume",
        {
            "points": points,
            "final_run_s": resume_s,
            "files_want": len(want),
            "files_got": len(got),
            "same_files": sorted(got) == sorted(want),
            "max_abs_diff": diff,
            "goal_max_abs_diff": 1e-6,
        },
    )
    shutil.rmtree(killed_root, ignore_errors=True)


def memory_steps(bench: Bench, work: Path) -> None:
    root = work / "artifacts"
    bench.record("rescan_peak_rss", child_rss(root, SCAN_CHILD.format(name="gen")))
    bench.record("search", child_rss(root, SEARCH_CHILD.format(name="gen")))


def tombstone_steps(bench: Bench, work: Path) -> None:
    """Recall@10 against exact and latency of HNSW as tombstones grow (no rebuild), on the library's vectors."""
    import faiss

    from core.index import mutable
    from core.index.graph_kinds import HNSWSpec
    from core.index.mutable import MutableIndex
    from core.library.library import Library

    os.environ["CAPSEARCH_ARTIFACTS"] = str(work / "artifacts")
    with Library.open("gen") as lib:
        key = lib.active
        ids, vectors = lib.index(key, lib.store(key)).all_vectors()  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    queries = vectors[rng.choice(len(vectors), 200, replace=False)] + rng.normal(
        0, 0.05, (200, vectors.shape[1])
    ).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    saved = mutable.REBUILD_TOMBSTONES
    mutable.REBUILD_TOMBSTONES = 1.0  # measure without the automatic rebuild
    rows = []
    try:
        index = MutableIndex.build(ids, vectors, HNSWSpec())
        order = rng.permutation(len(ids))
        removed = 0
        for fraction in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5):
            upto = int(fraction * len(ids))
            index.remove(ids[order[removed:upto]])
            removed = upto
            live = np.sort(ids[order[upto:]])
            keep = np.isin(ids, live)
            flat = faiss.IndexFlatIP(vectors.shape[1])
            flat.add(vectors[keep])
            _, truth = flat.search(queries, 10)
            truth_ids = ids[keep][truth]
            found, times = 0, []
            for q, want in zip(queries, truth_ids, strict=True):
                t = time.perf_counter()
                _, got = index.search(q, 10)
                times.append(time.perf_counter() - t)
                found += len(set(got.tolist()) & set(want.tolist()))
            rows.append(
                {
                    "tombstoned": fraction,
                    "recall_at_10": found / truth_ids.size,
                    "p50_ms": float(np.median(times) * 1e3),
                }
            )
    finally:
        mutable.REBUILD_TOMBSTONES = saved
    t = time.perf_counter()
    index.remove_tombstoned()
    bench.record(
        "hnsw_tombstones",
        {"rows": rows, "rebuild_s": time.perf_counter() - t, "vectors": len(ids), "threshold_used": saved},
    )


def flickr_steps(bench: Bench, work: Path, model: str) -> None:
    from core.library.library import add_folders, model_key
    from core.library.update import update
    from core.models.loading import load_model

    images = FLICKR8K / "images"
    if not images.is_dir():
        bench.record("flickr8k", {"skipped": f"{images} not found"})
        return
    os.environ["CAPSEARCH_ARTIFACTS"] = str(work / "artifacts")
    lm = load_model(model, device="cpu", precision="fp32")
    lib = add_folders("flickr8k", [images], index_kind="auto")
    t = time.perf_counter()
    stats = update(lib, lm, model_key(model, lm))
    build = time.perf_counter() - t
    t = time.perf_counter()
    again = update(lib, lm, model_key(model, lm))
    bench.record(
        "flickr8k",
        {
            "folder": str(images),
            "seconds": build,
            "images_per_s": stats.embedded / build,
            "rescan_no_change_s": time.perf_counter() - t,
            "rescan_hashed": again.hashed,
            **stats.to_dict(),
        },
    )
    lib.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--model", default="capsearch-tiny")
    parser.add_argument("--work", type=Path, default=REPO / "artifacts" / "bench-library")
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "results" / "bench_library.json")
    parser.add_argument("--skip-flickr", action="store_true")
    parser.add_argument("--skip-kills", action="store_true")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the built library of an earlier run: re-measure the rescan, change, memory and search "
        "steps (the earlier figures of those steps move to 'earlier' in the JSON)",
    )
    args = parser.parse_args()
    if not args.reuse:
        shutil.rmtree(args.work, ignore_errors=True)
        args.work.mkdir(parents=True)
    os.environ["CAPSEARCH_ARTIFACTS"] = str(args.work / "artifacts")
    bench = Bench(args.out, args)
    if args.reuse:
        earlier = json.loads(args.out.read_text())
        bench.result["steps"] = earlier["steps"]
        bench.result["earlier"] = {"commit": earlier["commit"], **earlier.get("earlier", {})}
    build_steps(bench, args.work, args.n, args.model, args.reuse)
    memory_steps(bench, args.work)
    if args.reuse:
        bench.record("done", {})
        return
    tombstone_steps(bench, args.work)
    if not args.skip_kills:
        kill_steps(bench, args.work, args.model)
    if not args.skip_flickr:
        flickr_steps(bench, args.work, args.model)
    bench.result["peak_rss_mib_bench_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    bench.record("done", {})


if __name__ == "__main__":
    main()
