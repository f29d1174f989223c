"""Pillow against Pillow-SIMD in the engine's decoding and end to end.

    flock /work/bench.lock .venv/bin/python scripts/bench_pillow_simd.py [--model capsearch-compact-minilm128]

Pillow-SIMD (a fork of Pillow with SIMD resampling, from PyPI as source only) installs its own ``PIL``
package over Pillow's, so the two cannot share one environment: ``--simd DIR`` names a
``pip install --target`` copy of it, built there when DIR holds none (``CC="cc -mavx2"``: a C compiler and
libjpeg's and zlib's headers are needed). Fresh processes alternate, Pillow then Pillow-SIMD (on
``PYTHONPATH``), ``--rounds`` times; each measures the engine's decode step (decode, resize, crop to uint8
pixels, one thread) on Flickr8k test images and on a 4032x3024 photo (decoded in draft, as the fast mode
does), the engine end to end on ``--images`` images (best of two runs), and saves the first 20 images'
pixels, compared afterwards. Writes artifacts/results/bench_pillow_simd.json (each model's latest run, and
every run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import FLICKR8K, clock, commit, machine_info, runs_log

from core.atomic import write_json
from core.paths import results_dir

BUILDS = ("pillow", "pillow-simd")
PIXEL_IMAGES = 20


def _best_rate(run: Any, items: int, reps: int) -> float:
    """Items per second of ``run``'s fastest of ``reps`` calls (a slow first call does not count)."""
    return items / min(clock(run)[1] for _ in range(reps))


def measure(model: str, images: int, photo: Path, pixels: Path) -> dict[str, Any]:
    """One build's figures, in this process (whichever ``PIL`` it imports)."""
    import PIL
    from bench_embedding import flickr8k_test

    from core.data.images import load_rgb
    from core.embed.engine import _SplitPreprocess, decode_min_side, encode_images, input_shape
    from core.models.loading import load_model

    lm = load_model(model, device="cpu", precision="fast")
    paths, _ = flickr8k_test(FLICKR8K, images, 0)
    shape = input_shape(lm)
    split, min_side = _SplitPreprocess(lm.preprocess), decode_min_side(lm, shape)

    def step(path: Path) -> Any:
        return split(load_rgb(path, min_side=min_side))

    sample = paths[:200]
    np.save(pixels, np.stack([step(p).numpy() for p in paths[:PIXEL_IMAGES]]))
    encode_images(lm, paths[:64])  # the probe and the inference copy, outside the timings
    return {
        "pil": {"version": PIL.__version__, "package": str(Path(PIL.__file__).parent)},
        "decode_step_per_s": _best_rate(lambda: [step(p) for p in sample], len(sample), 3),
        "photo_decode_step_per_s": _best_rate(lambda: step(photo), 1, 5),
        "end_to_end_per_s": _best_rate(lambda: encode_images(lm, paths), len(paths), 2),
    }


def ensure_simd(folder: Path) -> Path:
    """``folder`` holding Pillow-SIMD's ``PIL``, built there from PyPI when missing."""
    if not (folder / "PIL").is_dir():
        argv = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-binary", "pillow-simd"]
        env = {**os.environ, "CC": "cc -mavx2"}
        proc = subprocess.run([*argv, "--target", str(folder), "pillow-simd"], env=env, capture_output=True)
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace")[-2000:]
            sys.exit(
                f"building pillow-simd failed (a C compiler, libjpeg and zlib headers are needed):\n{tail}"
            )
    return folder


def child(build: str, args: argparse.Namespace, simd: Path, photo: Path, pixels: Path) -> dict[str, Any]:
    """:func:`measure` in a fresh process with ``build``'s ``PIL``."""
    env = dict(os.environ)
    if build == "pillow-simd":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(simd), env.get("PYTHONPATH", "")]))
    argv = [sys.executable, __file__, "--model", args.model, "--images", str(args.images)]
    argv += ["--child", str(photo), str(pixels)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    from_simd = Path(out["pil"]["package"]).is_relative_to(simd)
    if from_simd != (build == "pillow-simd"):
        sys.exit(f"the {build} child imported PIL from {out['pil']['package']}")
    return dict(out)


def pixel_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """How far two builds' uint8 pixels of the same images lie apart."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {
        "max": int(diff.max()),
        "mean": round(float(diff.mean()), 5),
        "share_differing": round(float((diff > 0).mean()), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="capsearch-compact-minilm128")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--simd", type=Path, help="a pip --target folder of pillow-simd (built when empty)")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.model, args.images, *args.child)))
        return
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        simd = ensure_simd(args.simd or Path(tmp) / "pillow-simd").resolve()
        photo = Path(tmp) / "photo.jpg"
        first = FLICKR8K / "images" / (FLICKR8K / "Flickr_8k.testImages.txt").read_text().split()[0]
        Image.open(first).convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC).save(
            photo, quality=90
        )
        runs: dict[str, list[dict[str, Any]]] = {build: [] for build in BUILDS}
        for _ in range(args.rounds):
            for build in BUILDS:
                runs[build].append(child(build, args, simd, photo, Path(tmp) / f"{build}.npy"))
                print(build, runs[build][-1], file=sys.stderr, flush=True)
        pixels = pixel_difference(*(np.load(Path(tmp) / f"{build}.npy") for build in BUILDS))
    result: dict[str, Any] = {"model": args.model, "images": args.images, "rounds": args.rounds}
    for build in BUILDS:
        result[build] = {"pil_version": runs[build][0]["pil"]["version"]}
        for figure in ("decode_step_per_s", "photo_decode_step_per_s", "end_to_end_per_s"):
            values = [r[figure] for r in runs[build]]
            result[build][figure] = {
                "median": round(statistics.median(values), 1),
                "runs": [round(v, 1) for v in values],
            }
    result["simd_to_pillow"] = {
        figure: round(result["pillow-simd"][figure]["median"] / result["pillow"][figure]["median"], 3)
        for figure in ("decode_step_per_s", "photo_decode_step_per_s", "end_to_end_per_s")
    }
    result["pixels_simd_vs_pillow"] = {"images": PIXEL_IMAGES, **pixels}
    result |= {"commit": commit(), "machine": machine_info()}
    out = results_dir() / "bench_pillow_simd.json"
    runs_kept = runs_log(out, result)
    write_json(out, {"models": {run["model"]: run for run in runs_kept}, "runs": runs_kept})
    print(json.dumps({k: result[k] for k in ("simd_to_pillow", "pixels_simd_vs_pillow")}))
    print(f"-> {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
