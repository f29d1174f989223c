"""Wall time of ``capsearch`` commands, each in a fresh process: those that need no model (version, listing,
status, housekeeping, a rescan that finds nothing new) and those that do (a rescan with one new photo, a
search). ``--against DIR`` runs another checkout's code (e.g. a ``git worktree`` of an older commit) in turns
with this one's, on the same library and artifacts root, so that both meet the same machine load.

    .venv/bin/python scripts/bench_cli_start.py [--photos DIR] [--n 300] [--model M] [--runs 5] [--against DIR]

The library is made from the first ``--n`` images of ``--photos`` (default: Flickr8k's images; else a
generated library); each "one new photo" run copies in a photo not seen before. Writes
artifacts/results/bench_cli_start.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import FLICKR8K, REPO, commit, machine_info  # noqa: E402

from core.atomic import write_json  # noqa: E402
from core.paths import results_dir  # noqa: E402

QUERY = "a dog runs on the beach"
COMMANDS: dict[str, list[str]] = {
    "version": ["--version"],
    "library list": ["library", "list"],
    "library status": ["library", "status"],
    "clean (report only)": ["clean"],
    "library update, nothing new": ["library", "update"],
    "library update, one new photo": ["library", "update"],
    "search (library, text)": ["search", QUERY, "-k", "5", "--paths"],
}
RUNNER = (
    "import sys, core\n"
    "from core.cli import main\n"
    "print(core.__file__, file=sys.stderr)\n"
    "try: rc = main(sys.argv[1:])\n"
    "except SystemExit as exc: rc = exc.code\n"
    "sys.exit(rc)\n"
)


def _photos(source: Path | None, n: int, reserve: int, tmp: Path) -> list[Path]:
    """``n + reserve`` image files: from ``source`` (default Flickr8k's images), else generated."""
    folder = source or FLICKR8K / "images"
    if not folder.is_dir():
        folder = tmp / "generated"
        script = REPO / "scripts" / "make_photo_library.py"
        cmd = [sys.executable, str(script), "--n", str(n + reserve), "--dups", "0", "--out", str(folder)]
        subprocess.run(cmd, check=True)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if len(files) < n + reserve:
        raise SystemExit(f"{folder} holds {len(files)} images; {n + reserve} are needed")
    return files[: n + reserve]


def _run(code: Path, argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """One command in a fresh interpreter on ``code``'s ``core``: wall seconds and the ``core`` it used."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, *argv],
        cwd=code,
        env={**env, "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv} on {code} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stderr.splitlines()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, help="a folder of images (default: Flickr8k's)")
    parser.add_argument("--n", type=int, default=300, help="photos in the library (default 300)")
    parser.add_argument("--model", default="capsearch-lit-lite2", help="the library's model")
    parser.add_argument("--runs", type=int, default=5, help="runs of each command per code (default 5)")
    parser.add_argument(
        "--against", type=Path, help="another checkout whose code runs in turns with this one"
    )
    args = parser.parse_args(argv)
    codes = {"this": REPO} | ({"against": args.against.resolve()} if args.against else {})
    with tempfile.TemporaryDirectory(prefix="capsearch-cli-start-") as tmp_name:
        tmp = Path(tmp_name)
        files = _photos(args.photos, args.n, args.runs * len(codes), tmp)
        library = tmp / "photos"
        library.mkdir()
        for path in files[: args.n]:
            shutil.copy2(path, library / path.name)
        reserve = iter(files[args.n :])
        env = {**os.environ, "CAPSEARCH_ARTIFACTS": str(tmp / "artifacts"), "HF_HUB_OFFLINE": "1"}
        build_s, _ = _run(REPO, ["library", "add", str(library), "--model", args.model], env)
        walls: dict[str, dict[str, list[float]]] = {name: {c: [] for c in codes} for name in COMMANDS}
        used: dict[str, str] = {}
        for _ in range(args.runs):
            for name, command in COMMANDS.items():
                for code_name, code in codes.items():
                    if name.endswith("one new photo"):
                        new = next(reserve)
                        shutil.copy2(new, library / new.name)
                    wall, used[code_name] = _run(code, command, env)
                    walls[name][code_name].append(wall)
                    print(f"{name:32s} {code_name:8s} {wall:6.2f} s", flush=True)
    commands: dict[str, Any] = {}
    for name, by_code in walls.items():
        commands[name] = {
            code: {"median_s": round(statistics.median(w), 3), "min_s": round(min(w), 3), "runs_s": w}
            for code, w in by_code.items()
        }
    result = {
        "machine": machine_info(),
        "commit": commit(),
        "model": args.model,
        "photos": args.n,
        "runs": args.runs,
        "build_s": round(build_s, 2),
        "code": {name: {"path": str(path), "core": used[name]} for name, path in codes.items()},
        "commands": commands,
    }
    out = results_dir() / "bench_cli_start.json"
    write_json(out, result)
    for name, by_code in commands.items():
        print(f"{name:32s} " + "  ".join(f"{c} {v['median_s']:6.2f} s" for c, v in by_code.items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
