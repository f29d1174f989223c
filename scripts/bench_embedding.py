"""Embedding throughput: the naive open_clip loop against capsearch's engine, same model and data, one run.

Naive: PIL decode + preprocess in the main thread, ``model.encode_image`` on fixed batches; captions
tokenized to the full 77-token context and ``model.encode_text`` on fixed batches; fp32 under no_grad.
Images run naive, engine, engine, naive and the mean of each pair is compared (the load of this shared
machine drifts). Engine: ``core.embed.engine.encode_images`` / ``encode_texts`` with the default (auto) precision, plus the
same in fp32 to separate the length bucketing / decode overlap from the number format. Also times the
knobs the engine chose between (inference_mode vs no_grad, bf16 autocast vs a bf16 copy, 1 vs 2 threads)
and the agreement of the engine's embeddings with the naive ones.

Usage: .venv/bin/python scripts/bench_embedding.py [--images 200] [--captions 1000] [--flickr8k DIR]
Writes artifacts/results/bench_embedding.json.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import FLICKR8K, machine_info  # noqa: E402

from core.atomic import write_json  # noqa: E402
from core.data.images import load_rgb  # noqa: E402
from core.embed.engine import causal_text_encoder, encode_images, encode_texts, token_lengths  # noqa: E402
from core.models.loading import LoadedModel, load_model  # noqa: E402
from core.paths import results_dir  # noqa: E402

MODEL = "ViT-B-32"


def flickr8k_test(source: Path, n_images: int, n_captions: int) -> tuple[list[Path], list[str]]:
    """The first ``n_images`` official test images and the first ``n_captions`` of their captions."""
    names = (source / "Flickr_8k.testImages.txt").read_text().split()[:n_images]
    wanted = set(names)
    captions: dict[str, list[str]] = {}
    for line in (source / "captions.txt").read_text(encoding="utf-8").splitlines():
        key, _, text = line.partition("\t")
        image = key.split("#")[0]
        if image in wanted:
            captions.setdefault(image, []).append(text)
    texts = [c for name in names for c in captions.get(name, [])][:n_captions]
    return [source / "images" / name for name in names], texts


def naive_images(lm: LoadedModel, paths: list[Path], batch_size: int) -> tuple[np.ndarray, float]:
    out, decode_s = [], 0.0
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            t0 = time.perf_counter()
            batch = torch.stack([lm.preprocess(load_rgb(p)) for p in paths[start : start + batch_size]])
            decode_s += time.perf_counter() - t0
            out.append(F.normalize(lm.model.encode_image(batch), dim=-1).numpy())
    return np.concatenate(out), decode_s


def naive_texts(lm: LoadedModel, texts: list[str], batch_size: int) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            tokens = lm.tokenizer(texts[start : start + batch_size])  # full 77-token context
            out.append(F.normalize(lm.model.encode_text(tokens), dim=-1).numpy())
    return np.concatenate(out)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = np.einsum("nd,nd->n", a, b)
    return {
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "max_abs_diff": float(np.abs(a - b).max()),
    }


def ranking_agreement(
    img_a: np.ndarray, txt_a: np.ndarray, img_b: np.ndarray, txt_b: np.ndarray
) -> dict[str, float]:
    """How often text->image top-1 agrees, and the mean top-10 overlap, between two embedding sets."""
    ra, rb = np.argsort(-(txt_a @ img_a.T), axis=1)[:, :10], np.argsort(-(txt_b @ img_b.T), axis=1)[:, :10]
    overlap = [len(set(x) & set(y)) / 10 for x, y in zip(ra.tolist(), rb.tolist(), strict=True)]
    return {"top1_same": float((ra[:, 0] == rb[:, 0]).mean()), "top10_overlap": float(np.mean(overlap))}


def knobs(lm: LoadedModel, paths: list[Path], texts: list[str]) -> dict[str, Any]:
    """Time one image batch and one length-cut caption batch under each setting (best of 2)."""
    images = torch.stack([lm.preprocess(load_rgb(p)) for p in paths[:8]])
    tokens = lm.tokenizer(texts[:64])
    tokens = tokens[:, : int(token_lengths(tokens).max())]
    fp32, bf16 = lm.model, copy.deepcopy(lm.model).to(torch.bfloat16)
    variants = {  # name: (context, model, image input)
        "fp32_no_grad": (torch.no_grad, fp32, images),
        "fp32_inference_mode": (torch.inference_mode, fp32, images),
        "bf16_autocast": (lambda: torch.autocast("cpu", dtype=torch.bfloat16), fp32, images),
        "bf16_copy": (torch.inference_mode, bf16, images.to(torch.bfloat16)),
    }
    result: dict[str, Any] = {
        "batch": {"images": 8, "captions": 64},
        "images_per_s": {},
        "captions_per_s": {},
    }
    for name, (context, model, x) in variants.items():
        text = causal_text_encoder(model)
        best_image = best_text = float("inf")
        for _ in range(2):
            with context():
                best_image = min(best_image, timed(lambda m=model, x=x: m.encode_image(x))[1])
                best_text = min(best_text, timed(lambda t=text: t(tokens))[1])
        result["images_per_s"][name] = round(8 / best_image, 2)
        result["captions_per_s"][name] = round(64 / best_text, 2)
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        with torch.inference_mode():
            best = min(timed(lambda: bf16.encode_image(images.to(torch.bfloat16)))[1] for _ in range(2))
        result["images_per_s"][f"bf16_copy_{n}_threads"] = round(8 / best, 2)
    torch.set_num_threads(threads)
    return result


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--captions", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32, help="image batch, both sides (default 32)")
    parser.add_argument("--text-batch-size", type=int, default=128, help="caption batch, both sides")
    parser.add_argument("--flickr8k", type=Path, default=FLICKR8K)
    return parser.parse_args()


def throughput(
    fp32: LoadedModel, auto: LoadedModel, paths: list[Path], texts: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """Embeddings and seconds of the naive loop, the engine (auto precision) and the engine in fp32.

    Images run in the order naive, engine, engine, naive (load on this shared machine drifts).
    """
    (naive_img, decode_s), naive_a = timed(lambda: naive_images(fp32, paths, args.batch_size))
    (engine_img, failed), engine_a = timed(lambda: encode_images(auto, paths, args.batch_size))
    _, engine_b = timed(lambda: encode_images(auto, paths, args.batch_size))
    _, naive_b = timed(lambda: naive_images(fp32, paths, args.batch_size))
    naive_txt, naive_txt_s = timed(lambda: naive_texts(fp32, texts, args.text_batch_size))
    engine_txt, engine_txt_s = timed(lambda: encode_texts(auto, texts, args.text_batch_size))
    exact_txt, exact_txt_s = timed(lambda: encode_texts(fp32, texts, args.text_batch_size))
    (exact_img, _), exact_img_s = timed(lambda: encode_images(fp32, paths, args.batch_size))
    return {
        "naive": (naive_img, naive_txt, [naive_a, naive_b], naive_txt_s),
        "engine": (engine_img, engine_txt, [engine_a, engine_b], engine_txt_s),
        "engine_fp32": (exact_img, exact_txt, [exact_img_s], exact_txt_s),
        "decode_s": decode_s,
        "failed": failed,
    }


def side(n_img: int, n_txt: int, runs: tuple[np.ndarray, np.ndarray, list[float], float]) -> dict[str, Any]:
    """Images and captions per second of one side (images: the mean of its runs)."""
    _, _, image_s, text_s = runs
    return {
        "images_per_s": round(n_img / (sum(image_s) / len(image_s)), 2),
        "captions_per_s": round(n_txt / text_s, 2),
    }


def ratios(runs: dict[str, Any]) -> dict[str, float]:
    """How many times faster than the naive loop the engine is (auto precision and fp32)."""

    def seconds(name: str) -> tuple[float, float]:
        _, _, image_s, text_s = runs[name]
        return sum(image_s) / len(image_s), text_s

    naive, engine, exact = seconds("naive"), seconds("engine"), seconds("engine_fp32")
    return {
        "images": round(naive[0] / engine[0], 2),
        "captions": round(naive[1] / engine[1], 2),
        "images_fp32": round(naive[0] / exact[0], 2),
        "captions_fp32": round(naive[1] / exact[1], 2),
    }


def agreements(runs: dict[str, Any]) -> dict[str, Any]:
    naive_img, naive_txt = runs["naive"][:2]
    engine_img, engine_txt = runs["engine"][:2]
    exact_img, exact_txt = runs["engine_fp32"][:2]
    return {
        "engine_images": agreement(engine_img, naive_img),
        "engine_captions": agreement(engine_txt, naive_txt),
        "engine_fp32_images": agreement(exact_img, naive_img),
        "engine_fp32_captions": agreement(exact_txt, naive_txt),
        "text_to_image_ranking": ranking_agreement(engine_img, engine_txt, naive_img, naive_txt),
    }


def main() -> None:
    args = arguments()
    info = machine_info()
    paths, texts = flickr8k_test(args.flickr8k, args.images, args.captions)
    fp32 = load_model(MODEL, device="cpu", precision="fp32")
    auto = load_model(MODEL, device="cpu")
    print(f"{len(paths)} images, {len(texts)} captions; engine precision {auto.precision}", file=sys.stderr)
    runs = throughput(fp32, auto, paths, texts, args)
    print("throughput done; timing knobs", file=sys.stderr)
    knob_times = knobs(fp32, paths, texts)

    n_img, n_txt = len(paths), len(texts)
    naive, engine = runs["naive"], runs["engine"]
    result = {
        "benchmark": "embedding throughput, naive open_clip loop vs capsearch engine",
        "model": f"{MODEL} (random init)",
        "device": "cpu",
        "data": {
            "dataset": "Flickr8k official test split (subset)",
            "images": n_img,
            "captions": n_txt,
            "note": f"first {n_img} images of Flickr_8k.testImages.txt and the first {n_txt} of their captions",
        },
        "batch_size": {"images": args.batch_size, "captions": args.text_batch_size},
        "engine_precision": auto.precision,
        "naive": {
            **side(n_img, n_txt, naive),
            "image_decode_s": round(runs["decode_s"], 2),
            "seconds": {"images": [round(s, 2) for s in naive[2]], "captions": round(naive[3], 2)},
        },
        "engine": {
            **side(n_img, n_txt, engine),
            "failed_images": len(runs["failed"]),
            "seconds": {"images": [round(s, 2) for s in engine[2]], "captions": round(engine[3], 2)},
        },
        "engine_fp32": side(n_img, n_txt, runs["engine_fp32"]),
        "ratios": ratios(runs),
        "goals": {"captions": 3.5, "images": 1.2},
        "agreement_with_naive": agreements(runs),
        "knobs_fp32_model": knob_times,
        "machine": info,
        "load_average_end": list(os.getloadavg()),
    }
    out = results_dir() / "bench_embedding.json"
    write_json(out, result)
    print(f"images {result['ratios']['images']}x, captions {result['ratios']['captions']}x -> {out}")


if __name__ == "__main__":
    main()
