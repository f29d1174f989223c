"""Which part of a model drifts in the fast mode, and what each fix costs: Recall@K and images/s per variant.

For one model (a trained checkpoint dir with a convolutional timm image trunk, e.g. lit-lite2, or a
compact model's ResNet tower) on a split of a prepared dataset: the images are decoded and preprocessed
once (full decode, as fp32 does), the captions are encoded in fp32, all in bf16 (the fast copy before
``core.embed.fp32_fast``) and in the engine's fast mode now (captions/s of each), and the image tower is
run in several variants (timm: trunk and head each in fp32 or bf16, channels-last, BatchNorm folded into
the convolutions; compact: bf16 folded and fused; both: the fast copy before ``fp32_fast`` and the
engine's fast copy now). For each image variant: the image embeddings' cosine to fp32, exact Recall@K with
each caption variant (the difference to all-fp32 in points), and model-only images/s on one batch
(variants timed round-robin, best of 3, ``--threads`` intra-op threads).

Usage: CAPSEARCH_ARTIFACTS=/path/with/datasets flock /work/bench.lock .venv/bin/python \
    scripts/check_fast_parts.py --model /path/to/lit-lite2-flickr8k [--dataset flickr8k] [--split test]
Writes artifacts/results/fast_parts.json (one entry per model, merged).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from benchlib import commit, flickr8k_dataset, machine_info  # noqa: E402
from open_clip.modified_resnet import ModifiedResNet  # noqa: E402
from torch import nn  # noqa: E402

from core.atomic import write_json  # noqa: E402
from core.data.images import load_rgb  # noqa: E402
from core.data.records import load_dataset  # noqa: E402
from core.embed.engine import _SplitPreprocess, inference_model, token_lengths  # noqa: E402
from core.embed.fp32_fast import fold_batch_norms, image_input_dtype  # noqa: E402
from core.embed.packed import pack_for_cpu  # noqa: E402
from core.embed.resnet_fast import fuse_resnet_tower, pool_mean_token  # noqa: E402
from core.evaluation.recall import recall_metrics  # noqa: E402
from core.models.loading import LoadedModel, load_model  # noqa: E402
from core.models.text_tower import hf_text_tower  # noqa: E402
from core.paths import results_dir  # noqa: E402

KS = (1, 5, 10)
BF16 = torch.bfloat16
CL = torch.channels_last


class Tower(nn.Module):
    """An image tower of a timm-trunk model: the trunk in one format and layout, the head in another."""

    def __init__(self, visual: nn.Module, trunk_dtype: torch.dtype, head_dtype: torch.dtype, cl: bool,
                 fold: bool) -> None:  # fmt: skip
        super().__init__()
        visual = copy.deepcopy(visual).eval()
        if fold:
            fold_batch_norms(visual.trunk)
        self.trunk = visual.trunk.to(trunk_dtype)
        self.head = visual.head.to(head_dtype)
        if cl:
            self.trunk = self.trunk.to(memory_format=CL)
        self.trunk_dtype, self.head_dtype = trunk_dtype, head_dtype
        self.layout = CL if cl else torch.contiguous_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.trunk_dtype).contiguous(memory_format=self.layout)
        return self.head(self.trunk(x).to(self.head_dtype)).float()


def all_bf16(lm32: LoadedModel) -> nn.Module:
    """The fast copy as the engine made it before :mod:`core.embed.fp32_fast`: all bf16, channels-last,
    linear layers prepacked."""
    return pack_for_cpu(copy.deepcopy(lm32.model).to(BF16).eval().to(memory_format=CL))


def bf16_folded_resnet(lm32: LoadedModel) -> nn.Module:
    """A compact model's fast copy as the engine made it before its fast mode went fp32: the ResNet folded
    and fused in fp32, then cast to bf16, channels-last, attention pool at the mean token, prepacked."""
    model = copy.deepcopy(lm32.model).eval()
    fuse_resnet_tower(model)
    model = model.to(BF16).to(memory_format=CL)
    pool_mean_token(model, pack=True)
    return pack_for_cpu(model)


def variants(lm32: LoadedModel, fast: LoadedModel) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    visual, before = lm32.model.visual, all_bf16(lm32).visual
    engine = inference_model(fast).visual
    engine_dtype = image_input_dtype(inference_model(fast), fast.dtype)
    f32 = torch.float32
    if isinstance(visual, ModifiedResNet):
        folded = bf16_folded_resnet(lm32).visual
        return {
            "fp32 (exact)": visual,
            "all bf16 (the fast mode before fp32_fast)": lambda x: before(
                x.to(BF16).contiguous(memory_format=CL)
            ),
            "bf16 folded and fused in fp32 before the cast": lambda x: folded(
                x.to(BF16).contiguous(memory_format=CL)
            ),
            "engine fast now (fp32_fast)": lambda x: engine(x.to(engine_dtype)),
        }
    return {
        "fp32 (exact)": visual,
        "all bf16 (the fast mode before fp32_fast)": lambda x: before(
            x.to(BF16).contiguous(memory_format=CL)
        ),
        "trunk bf16 cl folded, head bf16": Tower(visual, BF16, BF16, True, True),
        "trunk bf16 cl folded, head fp32": Tower(visual, BF16, f32, True, True),
        "trunk fp32 cl folded, head bf16": Tower(visual, f32, BF16, True, True),
        "trunk fp32 folded, head fp32, contiguous": Tower(visual, f32, f32, False, True),
        "engine fast now (fp32_fast)": lambda x: engine(x.to(engine_dtype)),
    }


def text_variants(
    lm32: LoadedModel, fast: LoadedModel, captions: list[str]
) -> dict[str, tuple[np.ndarray, float]]:
    """Caption embeddings and captions/s (interleaved, best of 3, the engine's length bucketing for each)
    of the fp32 model, the all-bf16 copy (before) and the engine's fast copy now."""
    tokens = lm32.tokenizer(captions)
    text = hf_text_tower(lm32.model)
    pad = text.config.pad_token_id if text is not None else 0
    lengths = token_lengths(tokens, pad)
    order = np.argsort(lengths, kind="stable")

    def bucketed(model: nn.Module) -> np.ndarray:
        out = np.zeros((len(captions), lm32.embed_dim), np.float32)
        with torch.inference_mode():
            for start in range(0, len(captions), 256):
                idx = order[start : start + 256]
                y = model.encode_text(tokens[torch.from_numpy(idx), : int(lengths[idx].max())]).float()
                out[idx] = torch.nn.functional.normalize(y, dim=-1).numpy()
        return out

    models = {
        "fp32": lm32.model,
        "all bf16 (before)": all_bf16(lm32),
        "engine fast now": inference_model(fast),
    }
    embeddings = {name: bucketed(model) for name, model in models.items()}  # also the warm-up
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(3):  # interleaved, best of 3: the machine is shared
        for name, model in models.items():
            seconds[name].append(_timed(lambda m=model: bucketed(m)))
    return {name: (embeddings[name], round(len(captions) / min(seconds[name]), 1)) for name in models}


def encode_all(run: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor, split: _SplitPreprocess,
               batch: int = 64) -> np.ndarray:  # fmt: skip
    out = []
    with torch.inference_mode():
        for i in range(0, len(pixels), batch):
            y = run(split.finish(pixels[i : i + batch])).float()
            out.append(torch.nn.functional.normalize(y, dim=-1).numpy())
    return np.concatenate(out)


def rates(
    runs: dict[str, Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor, rounds: int = 3
) -> dict[str, float]:
    """Images/s of each variant on the batch ``x``: one warm-up each, then ``rounds`` round-robin passes,
    best of each (the machine is shared: a burst of other load hits one pass, not one variant)."""
    best = dict.fromkeys(runs, float("inf"))
    with torch.inference_mode():
        for run in runs.values():
            run(x)
        for _ in range(rounds):
            for name, run in runs.items():
                best[name] = min(best[name], _timed(lambda r=run: r(x)))
    return {name: round(len(x) / seconds, 2) for name, seconds in best.items()}


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", default="flickr8k")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch", type=int, default=32, help="the model-only batch for images/s")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load0, cpu0, t0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
    dataset = flickr8k_dataset() if args.dataset == "flickr8k" else load_dataset(args.dataset)
    records = dataset.split(args.split)
    lm32 = load_model(args.model, device="cpu", precision="fp32")
    fast = load_model(args.model, device="cpu", precision="fast")
    split = _SplitPreprocess(lm32.preprocess)
    pixels = torch.stack([split(load_rgb(dataset.image_path(r))) for r in records])
    captions = [c for r in records for c in r.captions]
    caption_image = np.repeat(np.arange(len(records)), [len(r.captions) for r in records])
    texts = text_variants(lm32, fast, captions)
    rows: dict[str, Any] = {
        "images": {},
        "captions": {n: {"captions_per_s": r} for n, (_, r) in texts.items()},
    }
    x = split.finish(pixels[: args.batch])
    base: dict[str, Any] = {}
    runs = variants(lm32, fast)
    speed = rates(runs, x)
    for name, run in runs.items():
        images = encode_all(run, pixels, split)
        if not base:  # the first variant is the exact one
            base = {"images": images, "recall": flat_recall(images, texts["fp32"][0], caption_image)}
        cos = np.einsum("nd,nd->n", images, base["images"])
        row: dict[str, Any] = {"images_per_s": speed[name],
                               "cosine_to_fp32": {"min": round(float(cos.min()), 6),
                                                  "mean": round(float(cos.mean()), 6)}}  # fmt: skip
        for text_name, (text, _) in texts.items():
            row[f"with captions {text_name}"] = drift(images, text, caption_image, base["recall"])
        rows["images"][name] = row
        print(f"{name}: {row['images_per_s']}/s, max |dR| with fp32 / fast captions: "
              f"{row['with captions fp32']['max_abs_points']} / "
              f"{row['with captions engine fast now']['max_abs_points']}", flush=True)  # fmt: skip
    save(Path(args.model).name, {
        "model_id": lm32.model_id, "dataset": f"{dataset.name} {args.split}", "images": len(records),
        "captions": len(captions), "fast_format": fast.precision, "batch": args.batch,
        "threads": args.threads, "variants": rows, "machine": machine_info(),
        "load_average_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - cpu0, 1),
        "commit": commit(), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })  # fmt: skip


def flat_recall(images: np.ndarray, texts: np.ndarray, caption_image: np.ndarray) -> dict[str, float]:
    m = recall_metrics(images, texts, caption_image, KS)
    return {f"{d} R@{k}": m[d][f"R@{k}"] for d in ("text_to_image", "image_to_text") for k in KS}


def drift(images: np.ndarray, texts: np.ndarray, caption_image: np.ndarray,
          base: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    """Recall@K of these embeddings and its difference to all-fp32 in points."""
    flat = flat_recall(images, texts, caption_image)
    diff = {k: round(v - base[k], 3) for k, v in flat.items()}
    return {"recall": {k: round(v, 2) for k, v in flat.items()}, "minus_fp32_points": diff,
            "max_abs_points": max(abs(v) for v in diff.values())}  # fmt: skip


def save(label: str, result: dict[str, Any]) -> None:
    target = results_dir() / "fast_parts.json"
    try:
        everything = json.loads(target.read_text())
    except (OSError, ValueError):
        everything = {"check": __doc__.splitlines()[0], "models": {}}
    everything["models"][label] = result
    write_json(target, everything)
    print(f"-> {target}")


if __name__ == "__main__":
    main()
