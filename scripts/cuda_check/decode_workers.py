"""Decode workers against threads at a larger scale on CUDA, and captions timed twice per format."""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from core.embed.engine import encode_images, encode_texts  # noqa: E402
from core.models.loading import load_model  # noqa: E402


def timed(run) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    run()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    root = Path(".gpu/f8k")
    paths = sorted((root / "images").iterdir()) * 5
    captions = [line.split("\t", 1)[1] for line in (root / "captions.txt").read_text().splitlines()]
    out: dict = {"images": len(paths), "captions": len(captions)}
    for precision in ("fp32", "fast"):
        lm = load_model("ViT-B-32", device="cuda", precision=precision)
        encode_images(lm, paths[:256], workers=0)
        out[f"{precision}_captions_s"] = [
            round(timed(lambda lm=lm: encode_texts(lm, captions)), 3) for _ in range(2)
        ]
    for workers in (0, 8, 0, 8):
        out.setdefault(f"fast_workers_{workers}_s", []).append(
            round(timed(lambda n=workers: encode_images(lm, paths, workers=n)), 2)
        )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":  # decode workers are spawned: they import this file
    main()
