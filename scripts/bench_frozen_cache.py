"""Time the one-off frozen-feature cache of a capsearch-lit config on a dataset, and check bf16 against fp32.

    CAPSEARCH_ARTIFACTS=/tmp/fresh python scripts/bench_frozen_cache.py --precision fp32 \
        --splits train val test --out artifacts/results/frozen_cache_fp32.json
    CAPSEARCH_ARTIFACTS=/tmp/fresh python scripts/bench_frozen_cache.py --compare bf16 \
        --model artifacts/models/lit-lite2-flickr8k --out artifacts/results/frozen_cache_bf16_check.json

Timing mode: every split's clean image view and captions through the frozen trunks (the fast path of
:mod:`core.train.frozen_features`: inference mode, channels-last, one background decoding thread), into an
empty artifacts root (so nothing is reused; the run refuses a root that already holds those caches). Wall
and process CPU seconds per split and part, the CPU and the 1-minute load average (the machine is shared).

Compare mode (``--compare bf16``): the val and test features computed in fp32 and in bf16 (both cached in
the root, computed when missing) go through a trained checkpoint's heads; Recall@K both ways from each, and
their differences. bf16 is fit for the frozen pass only where every R@10 moves by less than 0.3 point.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.atomic import write_json  # noqa: E402
from core.data.records import load_dataset  # noqa: E402
from core.embed.tuning import cpu_model  # noqa: E402
from core.evaluation.recall import mean_recall, recall_metrics  # noqa: E402
from core.models.checkpoint import build_model  # noqa: E402
from core.models.loading import load_model  # noqa: E402
from core.progress import Reporter  # noqa: E402
from core.train.frozen_features import split_features  # noqa: E402
from core.train.lit import encode_features, lit_model_cfg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
R10_TOLERANCE = 0.3


class Log(Reporter):
    def log(self, message: str) -> None:
        print(time.strftime("%H:%M:%S"), message, flush=True)


def _timed_split(model: Any, cfg: dict[str, Any], args: argparse.Namespace, split: str, precision: str):
    """One split's clean images and its captions, timed part by part (wall, process CPU, load)."""
    ds = load_dataset(args.dataset)
    parts: dict[str, Any] = {}
    for part in args.parts:
        t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
        views, which = (1, ("images",)) if part == "images" else (0, ("images", "captions"))
        feats = split_features(model, cfg, args.config, ds, split, views, precision, Log(), parts=which)
        parts[part] = {
            "count": len(feats.records) if part == "images" else len(feats.caption_image),
            "reused": feats.reused,
            "seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - c0, 1),
            "loadavg_1min_start": round(load0, 2),
            "loadavg_1min_end": round(os.getloadavg()[0], 2),
        }
        Log().log(f"{split} {part}: {parts[part]}")
    return parts, feats


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="capsearch-lit-lite2")
    ap.add_argument("--dataset", default="flickr8k")
    ap.add_argument("--precision", default="fp32", help="timing mode: the frozen pass's number format")
    ap.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    ap.add_argument("--parts", nargs="+", default=["images", "captions"], choices=["images", "captions"])
    ap.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        help="combine the parts timed by earlier runs (their JSON files, or the logs of runs that died "
        "before writing one) into --out",
    )
    ap.add_argument("--compare", help="compare mode: this precision against fp32 on val and test")
    ap.add_argument("--model", help="compare mode: the trained checkpoint whose heads score the features")
    ap.add_argument("--out", type=Path, required=True)
    return ap.parse_args()


def _machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
        "note": "machine shared with other jobs: compare cpu_seconds as well as seconds",
    }


def time_cache(args: argparse.Namespace) -> dict[str, Any]:
    cfg = lit_model_cfg(args.config)
    model = build_model(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    splits = {s: _timed_split(model, cfg, args, s, args.precision)[0] for s in args.splits}
    if any(p["reused"] for parts in splits.values() for p in parts.values()):
        raise SystemExit("some features came from an existing cache: use an empty CAPSEARCH_ARTIFACTS root")
    return {
        "config": args.config,
        "dataset": args.dataset,
        "precision": args.precision,
        "fast_path": "torch.inference_mode, channels-last activations, one background decoding thread",
        "splits": splits,
        "total_seconds": round(time.perf_counter() - t0, 1),
        "total_cpu_seconds": round(time.process_time() - c0, 1),
        "machine": _machine(),
    }


def merge(paths: list[Path]) -> dict[str, Any]:
    """One table of every timed part found in earlier runs' JSON files or logs (the last wins)."""
    splits: dict[str, dict[str, Any]] = {}
    for path in paths:
        text = path.read_text()
        if path.suffix == ".json":
            for split, parts in json.loads(text)["splits"].items():
                splits.setdefault(split, {}).update({k: {**v, "source": path.name} for k, v in parts.items()})
            continue
        for m in re.finditer(r"^\S+ (\w+) (images|captions): (\{.*\})$", text, re.M):
            entry = ast.literal_eval(m.group(3))
            splits.setdefault(m.group(1), {})[m.group(2)] = {**entry, "source": path.name}
    parts = [p for s in splits.values() for p in s.values()]
    return {
        "splits": splits,
        "total_seconds": round(sum(p["seconds"] for p in parts), 1),
        "total_cpu_seconds": round(sum(p["cpu_seconds"] for p in parts), 1),
        "parts": len(parts),
        "machine": _machine(),
    }


def _scores(head_model: Any, feats: Any) -> dict[str, Any]:
    img, cap = encode_features(head_model, feats)
    metrics: dict[str, Any] = recall_metrics(img, cap, feats.caption_image)
    metrics["mean_recall"] = mean_recall(metrics)
    return metrics


def compare(args: argparse.Namespace) -> dict[str, Any]:
    lm = load_model(str(args.model), device="cpu", precision="fp32")
    head_model = lm.model.eval()
    cfg = lit_model_cfg(args.config)
    trunks = build_model(cfg)
    ds = load_dataset(args.dataset)
    out: dict[str, Any] = {"model": lm.model_id, "tolerance_R@10": R10_TOLERANCE, "splits": {}}
    ok = True
    for split in ("val", "test"):
        per = {
            p: _scores(head_model, split_features(trunks, cfg, args.config, ds, split, 1, p, Log()))
            for p in ("fp32", args.compare)
        }
        delta = {
            d: {k: round(per[args.compare][d][k] - per["fp32"][d][k], 3) for k in ("R@1", "R@5", "R@10")}
            for d in ("text_to_image", "image_to_text")
        }
        ok &= all(abs(delta[d]["R@10"]) < R10_TOLERANCE for d in delta)
        out["splits"][split] = {"fp32": per["fp32"], args.compare: per[args.compare], "delta": delta}
    out[f"{args.compare}_fit"] = ok
    out["machine"] = _machine()
    return out


def main() -> int:
    args = _args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    result = merge(args.merge) if args.merge else compare(args) if args.compare else time_cache(args)
    result["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_json(args.out if args.out.is_absolute() else ROOT / args.out, result)
    print(result.get("total_seconds"), result.get(f"{args.compare}_fit"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
