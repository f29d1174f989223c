"""Image embedding by backend: torch against OpenVINO (``--backend openvino``) through capsearch's engine.

For one model (``--model``: ViT-B-32 random init, a compact config, or a trained checkpoint dir), in one
process on the same Flickr8k test images, in fp32 and in the fast format:

* end to end through ``core.embed.engine.encode_images`` (decode + preprocess + encode, each backend's own
  batch: the probed plan for torch, 64 for OpenVINO), timed torch, openvino, openvino, torch and averaged;
* model only, on one preprocessed batch: the engine's torch copy (its probed threads and layout) against
  the compiled OpenVINO tower (best of three);
* the first-use cost of OpenVINO: conversion + saving the IR + compiling (cold), and loading the cached IR
  + compiling (warm);
* how far each backend's vectors are from torch's in the same format and from torch fp32;
* ``--whole-split DATASET``: ``split_embeddings`` of the whole split (default test; images and captions,
  what ``capsearch embed`` runs) with each backend, fp32 and fast;
* ``--recall DATASET``: Recall@K on the whole split (default test) with the torch and OpenVINO image
  vectors in ``--recall-precision`` (fp32 or fast; captions encoded once, by torch).

Usage: flock /work/bench.lock .venv/bin/python scripts/bench_backend.py --model ViT-B-32 [--images 200]
Merges the model's entry into artifacts/results/bench_backend.json (CPU, load and CPU seconds included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embedding import agreement, flickr8k_test  # noqa: E402
from bench_throughput import torch_run  # noqa: E402
from benchlib import FLICKR8K, clock, commit, machine_info, previous_results, rates  # noqa: E402

from core.atomic import write_json  # noqa: E402
from core.data.images import load_rgb  # noqa: E402
from core.data.records import load_dataset  # noqa: E402
from core.embed import openvino_backend as ovb  # noqa: E402
from core.embed.cache import cache_dir, clear_cache, split_embeddings  # noqa: E402
from core.embed.engine import encode_images, encode_texts, engine_plan  # noqa: E402
from core.evaluation.recall import recall_metrics  # noqa: E402
from core.models.loading import LoadedModel, load_model  # noqa: E402
from core.paths import results_dir  # noqa: E402

RESULTS = "bench_backend.json"
BACKENDS = ("torch", "openvino")


def first_use(lm: LoadedModel) -> dict[str, float]:
    """Seconds to convert + save + compile the tower (no IR cached), then to load the IR + compile."""
    shutil.rmtree(ovb.ir_folder(lm.model_id), ignore_errors=True)  # this run's artifacts root only
    ovb._COMPILED.pop(lm.model, None)
    _, cold, _ = clock(lambda: ovb.openvino_image_encoder(lm))
    ovb._COMPILED.pop(lm.model, None)
    _, warm, _ = clock(lambda: ovb.openvino_image_encoder(lm))
    return {"convert_save_compile_s": round(cold, 2), "load_cached_compile_s": round(warm, 2)}


def end_to_end(lm: LoadedModel, paths: list[Path]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Images/s of each backend through the engine, in the order torch, openvino, openvino, torch."""
    for backend in BACKENDS:  # warm-up: oneDNN primitives, OpenVINO's shapes
        encode_images(lm, paths[:16], backend=backend)
    runs: dict[str, list[tuple[float, float]]] = {b: [] for b in BACKENDS}
    vectors: dict[str, np.ndarray] = {}
    for backend in [*BACKENDS, *reversed(BACKENDS)]:
        (vectors[backend], failed), wall, cpu = clock(lambda b=backend: encode_images(lm, paths, backend=b))
        assert not failed, failed
        runs[backend].append((wall, cpu))
    out: dict[str, Any] = {backend: rates(len(paths), timings) for backend, timings in runs.items()}
    out["openvino_vs_torch"] = round(out["openvino"]["images_per_s"] / out["torch"]["images_per_s"], 2)
    return out, vectors


def model_only(lm: LoadedModel, x: torch.Tensor) -> dict[str, Any]:
    """Images/s of the engine's torch copy (as the engine runs it, streams included: ``torch_run``) and of
    the compiled OpenVINO tower on one preprocessed batch."""
    plan = engine_plan(lm)
    layout = torch.channels_last if plan.channels_last else torch.contiguous_format
    xt = x.to(lm.dtype).contiguous(memory_format=layout)
    encoder = ovb.openvino_image_encoder(lm)
    previous = torch.get_num_threads()

    def best(run: Callable[[], object]) -> float:
        run()
        return len(x) / min(clock(run)[1] for _ in range(3))

    try:
        torch_rate = best(torch_run(lm, x, previous))
    finally:
        torch.set_num_threads(previous)
    ov_rate = best(lambda: encoder(xt))
    return {
        "batch": len(x),
        "torch": {"images_per_s": round(torch_rate, 2), "plan": plan.__dict__},
        "openvino": {
            "images_per_s": round(ov_rate, 2),
            "precision_hint": encoder.hint,
            "streams": encoder.requests,
        },
        "openvino_vs_torch": round(ov_rate / torch_rate, 2),
    }


def recall(model: str, dataset: str, split: str, fmt: str) -> dict[str, Any]:
    """Recall@K (in ``fmt``) of the split with torch's and with OpenVINO's image vectors."""
    lm = load_model(model, device="cpu", precision=fmt)
    data = load_dataset(dataset)
    records = data.split(split)
    paths = [data.image_path(r) for r in records]
    captions = [c for r in records for c in r.captions]
    owner = np.repeat(np.arange(len(records)), [len(r.captions) for r in records])
    texts = encode_texts(lm, captions)
    out: dict[str, Any] = {"dataset": data.name, "split": split, "images": len(paths), "format": lm.precision}
    vectors = {}
    for backend in BACKENDS:
        (vectors[backend], failed), wall, _ = clock(lambda b=backend: encode_images(lm, paths, backend=b))
        out[backend] = {"metrics": recall_metrics(vectors[backend], texts, owner), "seconds": round(wall, 1)}
        out[backend]["failed"] = len(failed)
    out["openvino_vs_torch"] = agreement(vectors["openvino"], vectors["torch"])
    pairs = [
        (direction, name, value, out["torch"]["metrics"][direction][name])
        for direction, values in out["openvino"]["metrics"].items()
        for name, value in values.items()
    ]
    out["same_recall_at_k"] = all(a == b for _, name, a, b in pairs if name.startswith("R@"))
    out["largest_differences"] = {
        f"{direction} {name}": round(a - b, 4) for direction, name, a, b in pairs if a != b
    }
    return out


def whole_split(model: str, dataset: str, split: str, fmt: str) -> dict[str, Any]:
    """``split_embeddings`` (what ``capsearch embed`` runs: images, then each chunk's captions by torch) of
    the whole split with each backend, the cache cleared before each run, in the order torch, openvino,
    openvino, torch (the converted tower is cached by then, as after a first run)."""
    lm = load_model(model, device="cpu", precision=fmt)
    data = load_dataset(dataset)
    ovb.openvino_image_encoder(lm)  # conversion: timed apart, in first_use
    runs: dict[str, list[float]] = {b: [] for b in BACKENDS}
    images: dict[str, np.ndarray] = {}
    n = (0, 0)
    for backend in [*BACKENDS, *reversed(BACKENDS)]:
        clear_cache(cache_dir(lm.model_id, data.name, split, lm.precision))
        emb, wall, _ = clock(lambda b=backend: split_embeddings(lm, data, split, backend=b))
        runs[backend].append(wall)
        images[backend], n = emb.image_emb, (len(emb.records), len(emb.captions))
    out: dict[str, Any] = {"format": lm.precision, "dataset": data.name, "split": split}
    out.update(images=n[0], captions=n[1])
    for backend, walls in runs.items():
        mean = sum(walls) / len(walls)
        out[backend] = {"seconds": [round(w, 1) for w in walls], "images_per_s": round(n[0] / mean, 2)}
    out["openvino_vs_torch"] = round(out["openvino"]["images_per_s"] / out["torch"]["images_per_s"], 2)
    out["image_vectors_openvino_vs_torch"] = agreement(images["openvino"], images["torch"])
    return out


def one_model(model: str, paths: list[Path]) -> dict[str, Any]:
    result: dict[str, Any] = {"model": model, "images": len(paths)}
    reference: np.ndarray | None = None
    for fmt in ("fp32", "fast"):
        lm = load_model(model, device="cpu", precision=fmt)
        engine_plan(lm)  # probed once per machine and cached, as a long run would
        x = torch.stack([lm.preprocess(load_rgb(p)) for p in paths[:32]])
        entry: dict[str, Any] = {"format": lm.precision, "first_use": first_use(lm)}
        entry["end_to_end"], vectors = end_to_end(lm, paths)
        entry["model_only"] = model_only(lm, x)
        entry["openvino_vs_torch"] = agreement(vectors["openvino"], vectors["torch"])
        if reference is None:
            reference = vectors["torch"]
        entry["vs_torch_fp32"] = {b: agreement(vectors[b], reference) for b in BACKENDS}
        result["model_id"] = lm.model_id
        result[fmt] = entry
        print(f"{model} {fmt} ({lm.precision}): {json.dumps(entry['end_to_end'])}", file=sys.stderr)
    return result


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip/capsearch config or checkpoint dir")
    parser.add_argument("--label", help="the entry's name in the results (default: the model's name)")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--flickr8k", type=Path, default=FLICKR8K)
    parser.add_argument("--recall", metavar="DATASET", help="also Recall@K on this prepared dataset")
    parser.add_argument("--split", default="test", help="with --recall: the split (default test)")
    parser.add_argument(
        "--recall-precision", default="fp32", choices=("fp32", "fast"), help="with --recall (default fp32)"
    )
    parser.add_argument(
        "--whole-split", metavar="DATASET", help="also time split_embeddings of the split (both formats)"
    )
    parser.add_argument(
        "--formats", nargs="+", default=["fp32", "fast"], choices=("fp32", "fast"), help="for --whole-split"
    )
    parser.add_argument("--skip-speed", action="store_true", help="only --recall / --whole-split")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    import openvino as ov

    info, load_start, cpu_start = machine_info(), os.getloadavg()[0], time.process_time()
    t_start = time.perf_counter()
    result: dict[str, Any] = {}
    if not args.skip_speed:
        paths, _ = flickr8k_test(args.flickr8k, args.images, 0)
        result["speed"] = one_model(args.model, paths)
    if args.recall:
        result[f"recall_{args.recall_precision}"] = recall(
            args.model, args.recall, args.split, args.recall_precision
        )
    if args.whole_split:
        for fmt in args.formats:
            result[f"whole_split_{fmt}"] = whole_split(args.model, args.whole_split, args.split, fmt)
    run = {
        "machine": {
            **info,
            "openvino": ov.__version__,
            "openvino_cpu_capabilities": ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"),
            "cpu_flags_bf16": {
                "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
                "amx": torch.cpu._is_amx_tile_supported(),
            },
            "shared": "2 vCPUs shared with other sessions; see load_average_1min",
        },
        "load_average_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "wall_s": round(time.perf_counter() - t_start, 1),
        "cpu_s": round(time.process_time() - cpu_start, 1),
        "commit": commit(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    for part in result.values():  # each part carries the run it came from
        part.update(run)
    save(args.label or args.model.rstrip("/").split("/")[-1], result)


def save(label: str, result: dict[str, Any]) -> None:
    """Merge ``result``'s parts into the model's entry; one headline line per run in ``history``."""
    out = results_dir() / RESULTS
    everything = previous_results(out)
    everything.setdefault("benchmark", __doc__.splitlines()[0])
    everything.setdefault("models", {}).setdefault(label, {}).update(result)
    part = next(iter(result.values()))
    speed = result.get("speed", {})
    everything.setdefault("history", []).append(
        {
            "model": label,
            "timestamp": part["timestamp"],
            "commit": part["commit"],
            "cpu": part["machine"]["cpu"],
            "load_average_1min": part["load_average_1min"],
            "end_to_end_images_per_s": {
                fmt: {b: speed[fmt]["end_to_end"][b]["images_per_s"] for b in BACKENDS}
                for fmt in ("fp32", "fast")
                if fmt in speed
            },
            "whole_split_openvino_vs_torch": {
                k: v["openvino_vs_torch"] for k, v in result.items() if k.startswith("whole_split_")
            },
            "same_recall_at_k": {
                k: v["same_recall_at_k"] for k, v in result.items() if k.startswith("recall_")
            },
        }
    )
    write_json(out, everything)
    print(f"{label} on {part['machine']['cpu']} -> {out}")


if __name__ == "__main__":
    main()
