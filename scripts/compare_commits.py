"""Old and new code side by side: run a benchmark script of two commits alternately, each in its own
worktree and artifacts root, and compare the medians (this shared VM's speed drifts, so only interleaved
runs compare fairly).

    .venv/bin/python scripts/compare_commits.py OLD NEW --bench query_latency --rounds 5
    .venv/bin/python scripts/compare_commits.py OLD NEW --bench first_paint --rounds 5
    .venv/bin/python scripts/compare_commits.py OLD NEW --bench training_flickr8k --rounds 3

Writes artifacts/results/compare_<bench>.json. Each commit runs its own scripts and code with this
checkout's .venv (the `capsearch` command of a commit is a shim calling that commit's entry point).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path

from benchlib import FLICKR8K, REPO, machine_info

from core.atomic import write_json

PYTHON = Path(sys.executable)
BENCHES = {
    # bench -> (script, its arguments, results file, the figure compared: a path into its JSON)
    "query_latency": (
        "bench_query_latency.py",
        ["--precision", "bf16", "--rounds", "1", "--flickr8k", str(FLICKR8K)],
        "bench_query_latency_bf16.json",
        ("end_to_end_ms", "p50"),
    ),
    "first_paint": (
        "bench_first_paint.py",
        ["--runs", "1"],
        "bench_first_paint.json",
        ("first_paint_s", "median"),
    ),
    "training_demo": (
        "bench_training.py",
        ["--case", "demo", "--runs", "1"],
        "bench_training_demo.json",
        ("steps_per_s", "median"),
    ),
    "training_flickr8k": (
        "bench_training.py",
        [
            "--case",
            "flickr8k-compact",
            "--runs",
            "1",
            "--steps",
            "20",
            "--warmup",
            "3",
            "--flickr8k",
            str(FLICKR8K),
        ],
        "bench_training_flickr8k_compact.json",
        ("steps_per_s", "median"),
    ),
}


def worktree(rev: str) -> Path:
    """A detached worktree of ``rev`` with a ``.venv/bin`` of shims into this checkout's environment."""
    sha = subprocess.run(["git", "rev-parse", rev], cwd=REPO, capture_output=True, text=True, check=True)
    path = Path("/tmp") / f"capsearch-compare-{sha.stdout.strip()[:12]}"
    if not path.is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=REPO, check=True)
    entry = tomllib.loads((path / "pyproject.toml").read_text())["project"]["scripts"]["capsearch"]
    module, func = entry.split(":")
    bin_dir = path / ".venv" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "python").unlink(missing_ok=True)
    (bin_dir / "python").symlink_to(PYTHON)
    shim = bin_dir / "capsearch"
    code = f'import sys; sys.path.insert(0, "{path}"); from {module} import {func}; sys.exit({func}())'
    shim.write_text(f'#!/bin/sh\nexport PYTHONPATH="{path}"\nexec {PYTHON} -c \'{code}\' "$@"\n')
    shim.chmod(0o755)
    return path


def run_once(tree: Path, root: Path, bench: str) -> float:
    script, args, result, (key, stat) = BENCHES[bench]
    env = {**os.environ, "CAPSEARCH_ARTIFACTS": str(root), "PYTHONPATH": str(tree)}
    subprocess.run([str(PYTHON), str(tree / "scripts" / script), *args], cwd=tree, env=env, check=True)
    return float(json.loads((root / "results" / result).read_text())[key][stat])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--bench", choices=sorted(BENCHES), required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trees = {rev: worktree(rev) for rev in (args.old, args.new)}
    roots = {rev: Path("/tmp") / f"capsearch-compare-artifacts-{trees[rev].name[-12:]}" for rev in trees}
    if args.bench == "first_paint":  # the app opens the demo: train it once per root
        for rev, tree in trees.items():
            env = {**os.environ, "CAPSEARCH_ARTIFACTS": str(roots[rev])}
            subprocess.run([str(tree / ".venv" / "bin" / "capsearch"), "demo"], env=env, check=True)
    values: dict[str, list[float]] = {rev: [] for rev in trees}
    for i in range(args.rounds):
        for rev in trees if i % 2 == 0 else reversed(list(trees)):  # alternate which goes first
            values[rev].append(run_once(trees[rev], roots[rev], args.bench))
            print(f"round {i + 1}: {rev} {values[rev][-1]}", flush=True)
    medians = {rev: statistics.median(v) for rev, v in values.items()}
    payload = {
        "bench": args.bench,
        "figure": "/".join(BENCHES[args.bench][3]),
        "old": args.old,
        "new": args.new,
        "commits": {rev: tree.name.removeprefix("capsearch-compare-") for rev, tree in trees.items()},
        "values": values,
        "medians": medians,
        "new_over_old": round(medians[args.new] / medians[args.old], 3),
        "machine": machine_info(),
    }
    write_json(REPO / "artifacts" / "results" / f"compare_{args.bench}.json", payload)
    print(json.dumps({k: payload[k] for k in ("medians", "new_over_old")}))


if __name__ == "__main__":
    main()
