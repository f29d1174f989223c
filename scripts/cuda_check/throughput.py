"""capsearch's engine on CUDA: images/s of ViT-B-32 (random init) in fp32 and the fast format over the
subset's images, with 8 spawned decode workers (the engine's default beside 16 cores when this ran, at
2a2442a; its ``default`` keys in cuda_check.json) and with decode threads, and the CUDA vectors against
the CPU's."""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from core.embed.engine import encode_images, encode_texts  # noqa: E402
from core.models.loading import load_model  # noqa: E402

WORKERS = 8


def main() -> None:
    root = Path(".gpu/f8k")
    paths = sorted((root / "images").iterdir())
    captions = [line.split("\t", 1)[1] for line in (root / "captions.txt").read_text().splitlines()][:5000]
    out: dict = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "images": len(paths),
        "cpu_cores": torch.get_num_threads(),
        "workers": WORKERS,
    }
    for precision in ("fp32", "fast"):
        lm = load_model("ViT-B-32", device="cuda", precision=precision)
        encode_images(lm, paths[:256], workers=0)  # warm-up: cuDNN, allocator
        for workers in (WORKERS, 0):
            torch.cuda.synchronize()
            t = time.perf_counter()
            vecs, failed = encode_images(lm, paths, workers=workers)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
            out[f"{precision}_workers_{workers}_images_per_s"] = round(len(paths) / dt, 1)
            assert not failed, failed[:3]
        t = time.perf_counter()
        encode_texts(lm, captions)
        torch.cuda.synchronize()
        out[f"{precision}_captions_per_s"] = round(len(captions) / (time.perf_counter() - t), 1)
        out[f"{precision}_dtype"] = str(lm.dtype)
        if precision == "fp32":
            gpu32 = vecs
        else:
            out["fast_vs_fp32_min_cosine"] = round(float((vecs * gpu32).sum(1).min()), 6)
    cpu = load_model("ViT-B-32", device="cpu", precision="fp32")
    ref, _ = encode_images(cpu, paths[:64], workers=0)
    out["cuda_fp32_vs_cpu_fp32_min_cosine"] = round(float((ref * gpu32[:64]).sum(1).min()), 6)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":  # decode workers are spawned: they import this file
    main()
