"""The long crash-consistency run: SIGKILL each command at many seeded random points (default 100),
rerun it, and compare with an uninterrupted run. Writes artifacts/results/kill_harness.json.

    .venv/bin/python scripts/kill_harness.py --points 100 [--commands prepare embed index train]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the harness lives with the tests that run its bounded version

from benchlib import machine_info  # noqa: E402
from crash_harness import COMMANDS, check_command  # noqa: E402

from core.atomic import write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=100, help="kill points per command (default 100)")
    parser.add_argument("--commands", nargs="+", default=sorted(COMMANDS), choices=sorted(COMMANDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "results" / "kill_harness.json")
    args = parser.parse_args()
    report: dict[str, object] = {
        "points_per_command": args.points,
        "seed": args.seed,
        "machine": machine_info(),
    }
    for name in args.commands:
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"kill-{name}-") as work:
            points = check_command(COMMANDS[name], Path(work), args.points, args.seed)
        summary = {
            "argv": list(COMMANDS[name].argv),
            "points": len(points),
            "killed_mid_run": sum(p.killed_mid_run for p in points),
            "consistent": sum(p.consistent for p in points),
            "seconds": round(time.monotonic() - t0, 1),
            "inconsistent": [dataclasses.asdict(p) for p in points if not p.consistent],
        }
        report[name] = summary
        print(json.dumps({name: {k: v for k, v in summary.items() if k != "inconsistent"}}), flush=True)
        write_json(args.out, report)


if __name__ == "__main__":
    main()
