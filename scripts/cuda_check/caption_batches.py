"""Caption batching on CUDA: the CPU's length batches (close at 512 tokens, 256 rows) against larger ones."""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import core.embed.engine as E  # noqa: E402
from core.models.loading import load_model  # noqa: E402

SETTINGS = ((512, 256), (4096, 1024), (16384, 4096), (65536, 8192), (1 << 30, 1 << 30))


def main() -> None:
    lines = Path(".gpu/f8k/captions.txt").read_text().splitlines()
    captions = [line.split("\t", 1)[1] for line in lines]
    out: dict = {"captions": len(captions)}
    for precision in ("fp32", "fast"):
        lm = load_model("ViT-B-32", device="cuda", precision=precision)
        ref = None
        for tokens, rows in SETTINGS:
            E.MIN_BATCH_TOKENS = tokens
            times = []
            for _ in range(3):
                torch.cuda.synchronize()
                t = time.perf_counter()
                v = E.encode_texts(lm, captions, batch_size=rows)
                torch.cuda.synchronize()
                times.append(round(time.perf_counter() - t, 3))
            ref = v if ref is None else ref
            out[f"{precision}_{tokens}_{rows}"] = {
                "s": times,
                "per_s_best": round(len(captions) / min(times)),
                "min_cos_to_first": round(float((v * ref).sum(1).min()), 6),
            }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
