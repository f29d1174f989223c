"""HNSW parameter sweep on real embeddings, and the exact-vs-HNSW latency crossover behind ``auto``.

Sweep: for each gallery of a dataset split (its images, queried by its captions; its captions, queried by
its images), an exact IndexFlatIP and IndexHNSWFlat for every M x efSearch: recall@10 against exact,
single-query search latency p50/p95, build time and index bytes.

Crossover: clustered unit vectors (a Gaussian mixture, structured like embeddings, unlike uniform noise)
at growing sizes; exact and HNSW (M=16, efConstruction=200, efSearch=100) single-query p50. Both indexes
grow incrementally, so the largest HNSW build is paid once.

Writes ``artifacts/results/hnsw_sweep_<model-id>.json`` and ``artifacts/reports/hnsw_sweep_<model-id>.png``.

    .venv/bin/python scripts/bench_hnsw_sweep.py --model capsearch-tiny --dataset flickr8k
    .venv/bin/python scripts/bench_hnsw_sweep.py --model artifacts/models/<compact> --skip-crossover
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
from benchlib import save_png

from core.atomic import write_json
from core.data.records import PreparedDataset, load_dataset
from core.embed.cache import split_embeddings
from core.evaluation.latency import percentile, percentiles
from core.evaluation.recall import neighbour_recall
from core.evaluation.runner import library_versions
from core.index.auto import AUTO_EXACT_MAX
from core.index.graph_kinds import ExactSpec, HNSWSpec
from core.index.vector_index import VectorIndex
from core.models.loading import LoadedModel, load_model
from core.paths import reports_dir, results_dir, safe_name

K = 10


def _stats(wall: list[float], cpu: list[float]) -> dict[str, float]:
    return {**percentiles(wall, digits=None), "cpu_p50": percentile(cpu, 50, digits=None)}


def _timed(index: VectorIndex, q: np.ndarray, wall: list[float], cpu: list[float], k: int) -> None:
    start, start_cpu = time.perf_counter(), time.thread_time()
    index.search(q, k)
    cpu.append(1000 * (time.thread_time() - start_cpu))
    wall.append(1000 * (time.perf_counter() - start))


def single_query_ms(index: VectorIndex, queries: np.ndarray, k: int = K) -> dict[str, float]:
    """Wall p50/p95 and CPU-time p50 (this thread) of one-query searches in ms, after one warm-up query."""
    index.search(queries[0], k)
    wall: list[float] = []
    cpu: list[float] = []
    for q in queries:
        _timed(index, q, wall, cpu, k)
    return _stats(wall, cpu)


def paired_query_ms(a: VectorIndex, b: VectorIndex, queries: np.ndarray, k: int = K) -> tuple[dict, dict]:
    """:func:`single_query_ms` for two indexes, alternating per query so CPU contention hits both alike."""
    times = (([], []), ([], []))
    for index in (a, b):
        index.search(queries[0], k)
    for q in queries:
        for index, (wall, cpu) in zip((a, b), times, strict=True):
            _timed(index, q, wall, cpu, k)
    return _stats(*times[0]), _stats(*times[1])


def sweep_gallery(
    gallery: np.ndarray, queries: np.ndarray, ms: list[int], efs: list[int], ef_construction: int, timed: int
) -> dict:
    """Exact and every HNSW (M, efSearch) over one gallery; recall against exact on all queries."""
    ids = [str(i) for i in range(len(gallery))]
    exact = VectorIndex.build(gallery, "exact", ids, "bench")
    _, truth = exact.search(queries, K)
    timed_queries = queries[:timed]
    out = {
        "vectors": len(gallery),
        "dim": gallery.shape[1],
        "queries": len(queries),
        "exact": {
            "latency_ms": single_query_ms(exact, timed_queries),
            "build_s": exact.build_seconds,
            "bytes": exact.nbytes,
        },
        "hnsw": [],
    }
    for m in ms:
        index = VectorIndex.build(gallery, HNSWSpec(m=m, ef_construction=ef_construction), ids, "bench")
        for ef in efs:
            index.set_ef_search(ef)
            _, found = index.search(queries, K)
            row = {
                "m": m,
                "ef_construction": ef_construction,
                "ef_search": ef,
                "recall_at_10": neighbour_recall(found, truth, K),
                "latency_ms": single_query_ms(index, timed_queries),
                "build_s": index.build_seconds,
                "bytes": index.nbytes,
            }
            out["hnsw"].append(row)
            print(
                f"  M={m:<3} efSearch={ef:<4} recall@10={row['recall_at_10']:.4f} "
                f"p50={row['latency_ms']['p50']:.3f} ms (cpu {row['latency_ms']['cpu_p50']:.3f}) build={row['build_s']:.2f} s bytes={row['bytes']}",
                flush=True,
            )
    print(
        f"  exact p50={out['exact']['latency_ms']['p50']:.3f} ms (cpu {out['exact']['latency_ms']['cpu_p50']:.3f})",
        flush=True,
    )
    return out


def clustered(
    n: int, dim: int, rng: np.random.Generator, centres: np.ndarray, noise: float = 0.6
) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), n)] + noise * rng.standard_normal((n, dim)) / np.sqrt(dim)
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def crossover(dim: int, sizes: list[int], hnsw_max: int, timed: int, seed: int = 0) -> dict:
    """Exact vs HNSW single-query p50 at growing sizes; both indexes grow incrementally."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim)) / np.sqrt(dim)
    queries = clustered(timed, dim, rng, centres)
    spec = HNSWSpec()
    flat = faiss.IndexFlatIP(dim)
    hnsw = faiss.IndexHNSWFlat(dim, spec.m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = spec.ef_construction
    hnsw.hnsw.efSearch = spec.ef_search
    rows, build_s = [], 0.0
    for n in sizes:
        new = clustered(n - flat.ntotal, dim, rng, centres)
        flat.add(new)
        exact = VectorIndex(flat, ExactSpec(), {"model_id": "bench", "ids": []})
        row: dict = {"vectors": n}
        if n <= hnsw_max:
            start = time.perf_counter()
            hnsw.add(new)
            build_s += time.perf_counter() - start
            approx = VectorIndex(hnsw, spec, {"model_id": "bench", "ids": []})
            _, truth = exact.search(queries, K)
            _, found = approx.search(queries, K)
            row["exact_ms"], row["hnsw_ms"] = paired_query_ms(exact, approx, queries)
            row.update(hnsw_build_s=build_s, hnsw_recall_at_10=neighbour_recall(found, truth, K))
        else:
            row["exact_ms"] = single_query_ms(exact, queries)
        rows.append(row)
        hn = (
            f"hnsw p50={row['hnsw_ms']['p50']:.3f} (cpu {row['hnsw_ms']['cpu_p50']:.3f}) ms recall={row['hnsw_recall_at_10']:.3f}"
            if "hnsw_ms" in row
            else ""
        )
        print(
            f"  d={dim} n={n:<7} exact p50={row['exact_ms']['p50']:.3f} (cpu {row['exact_ms']['cpu_p50']:.3f}) ms {hn}",
            flush=True,
        )
    return {"dim": dim, "spec": spec.to_dict(), "rows": rows, "crossover_vectors": _crossing(rows)}


def _crossing(rows: list[dict]) -> float | None:
    """Size where exact's CPU-time p50 first exceeds HNSW's (log-linear interpolation between sizes).

    CPU time of the searching thread, not wall time: the machine is shared, and wall time then measures the
    neighbours' load as much as the index (both are recorded).
    """
    pairs = [
        (r["vectors"], r["exact_ms"]["cpu_p50"] - r["hnsw_ms"]["cpu_p50"]) for r in rows if "hnsw_ms" in r
    ]
    for (n0, d0), (n1, d1) in zip(pairs, pairs[1:], strict=False):
        if d0 <= 0 < d1:
            t = -d0 / (d1 - d0)
            return float(np.exp(np.log(n0) + t * (np.log(n1) - np.log(n0))))
    if pairs and pairs[0][1] > 0:
        return float(pairs[0][0])
    return None


def _nice_floor(value: float) -> int:
    """``value`` rounded down to one significant digit (7,300 -> 7,000): a threshold, not a measurement."""
    scale = 10 ** int(np.floor(np.log10(value)))
    return int(value // scale * scale)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    galleries = result["sweep"]
    panels = len(galleries) + len(result.get("crossover", []))
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2))
    axes = np.atleast_1d(axes)
    for ax, (name, g) in zip(axes, galleries.items(), strict=False):
        for m in sorted({r["m"] for r in g["hnsw"]}):
            rows = [r for r in g["hnsw"] if r["m"] == m]
            xs = [r["latency_ms"]["cpu_p50"] for r in rows]
            ys = [100 * r["recall_at_10"] for r in rows]
            ax.plot(xs, ys, marker="o", label=f"HNSW M={m}")
            for r, x, y in zip(rows, xs, ys, strict=True):
                ax.annotate(
                    str(r["ef_search"]), (x, y), textcoords="offset points", xytext=(3, -10), fontsize=7
                )
        ax.axvline(g["exact"]["latency_ms"]["cpu_p50"], color="grey", ls="--", label="exact")
        ax.set_title(f"{name}: {g['vectors']} vectors, d={g['dim']}", fontsize=10)
        ax.set_xlabel("single-query p50 search CPU time (ms)")
        ax.set_ylabel("recall@10 vs exact (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax, cross in zip(axes[len(galleries) :], result.get("crossover", []), strict=False):
        rows = cross["rows"]
        ax.loglog(
            [r["vectors"] for r in rows], [r["exact_ms"]["cpu_p50"] for r in rows], marker="o", label="exact"
        )
        hn = [r for r in rows if "hnsw_ms" in r]
        ax.loglog(
            [r["vectors"] for r in hn],
            [r["hnsw_ms"]["cpu_p50"] for r in hn],
            marker="s",
            label="HNSW M=16 ef=100",
        )
        if cross["crossover_vectors"]:
            ax.axvline(
                cross["crossover_vectors"],
                color="grey",
                ls=":",
                label=f"crossover {cross['crossover_vectors']:.0f}",
            )
        threshold = result.get("auto_exact_max_suggested") or result["auto_exact_max_in_code"]
        ax.axvline(threshold, color="black", ls="--", label=f"auto threshold {threshold}")
        ax.set_title(f"exact vs HNSW, clustered d={cross['dim']}", fontsize=10)
        ax.set_xlabel("vectors")
        ax.set_ylabel("single-query p50 search CPU time (ms)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"HNSW sweep — {result['model_id']} on {result['dataset']}/{'+'.join(result['splits'])}")
    fig.tight_layout()
    save_png(fig, path)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="capsearch-tiny", help="model name or checkpoint dir")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--dataset", default="flickr8k")
    parser.add_argument("--splits", nargs="+", default=["test"], help="splits pooled into the galleries")
    parser.add_argument("--ms", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--efs", type=int, nargs="+", default=[16, 32, 64, 100, 200])
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--timed-queries", type=int, default=300, help="queries timed one at a time")
    parser.add_argument(
        "--crossover-sizes",
        type=int,
        nargs="+",
        default=[1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000],
    )
    parser.add_argument("--crossover-dims", type=int, nargs="+", default=[256, 512])
    parser.add_argument(
        "--crossover-hnsw-max", type=int, default=100000, help="largest HNSW built for the crossover"
    )
    parser.add_argument("--skip-crossover", action="store_true")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


def pooled_embeddings(
    lm: LoadedModel, data: PreparedDataset, splits: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The image and caption embeddings of ``splits``, each side concatenated."""
    images, captions = [], []
    for split in splits:
        emb = split_embeddings(lm, data, split)
        images.append(emb.image_emb)
        captions.append(emb.caption_emb)
    return np.concatenate(images), np.concatenate(captions)


def main() -> int:
    args = arguments()
    started = time.perf_counter()
    lm = load_model(args.model, args.pretrained, device=args.device)
    data = load_dataset(args.dataset)
    image_emb, caption_emb = pooled_embeddings(lm, data, args.splits)
    print(
        f"{lm.model_id}: {len(image_emb)} images, {len(caption_emb)} captions, d={image_emb.shape[1]}",
        flush=True,
    )

    result: dict = {
        "benchmark": "hnsw_sweep",
        "model_id": lm.model_id,
        "dataset": data.name,
        "splits": args.splits,
        "k": K,
        "faiss_threads": faiss.omp_get_max_threads(),
        "latency": "one query per search call (FAISS on one thread): wall p50/p95 and the searching thread's "
        "CPU-time p50 over --timed-queries queries; CPU time is the comparable number on this shared machine",
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": library_versions(),
        "auto_exact_max_in_code": AUTO_EXACT_MAX,
        "sweep": {},
    }
    for name, gallery, queries in (("images", image_emb, caption_emb), ("captions", caption_emb, image_emb)):
        print(f"gallery {name}: {len(gallery)} vectors, {len(queries)} queries", flush=True)
        result["sweep"][name] = sweep_gallery(
            gallery, queries, args.ms, args.efs, args.ef_construction, args.timed_queries
        )
    if not args.skip_crossover:
        result["crossover"] = [
            crossover(dim, sorted(args.crossover_sizes), args.crossover_hnsw_max, args.timed_queries)
            for dim in args.crossover_dims
        ]
        crossings = [c["crossover_vectors"] for c in result["crossover"] if c["crossover_vectors"]]
        result["auto_exact_max_suggested"] = _nice_floor(min(crossings)) if crossings else None
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)

    stem = f"hnsw_sweep_{safe_name(lm.model_id)}"
    write_json(results_dir() / f"{stem}.json", result)
    plot(result, reports_dir() / f"{stem}.png")
    print(f"wrote {results_dir() / (stem + '.json')} and {reports_dir() / (stem + '.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
