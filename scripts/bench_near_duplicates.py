"""Near-duplicate accuracy on a generated photo library with planted pairs, then on Flickr8k as a library.

    CAPSEARCH_ARTIFACTS=artifacts .venv/bin/python scripts/bench_near_duplicates.py \\
        --library /tmp/photo-library --model artifacts/models/lit-lite2-flickr8k --precision bf16 \\
        --distractors 0
    CAPSEARCH_ARTIFACTS=artifacts .venv/bin/python scripts/bench_near_duplicates.py --flickr8k-library flickr8k

1. The library comes from ``scripts/make_photo_library.py`` (its manifest lists the planted pairs). Every
   planted image and ``--distractors`` other images drawn at random (0: all) are hard-linked into a
   subset folder beside it, prepared as an uncaptioned folder dataset, embedded (cached), perceptually
   hashed and thumbnailed (:mod:`core.data.phash`).
2. The planted pairs are split at random into two halves, and so are the distractors: half A (tuning) and
   half B (report), each grouped on its own. A pair is found when both its images are in one group; a
   group is impure when it holds an image that is not the planted duplicate of the others (any group other
   than exactly one planted pair). Candidate pairs are found once per half (similarity at least the lowest
   threshold tried, or hash distance <= 16, pixel-checked: :mod:`core.data.pixel_match`); every
   :class:`core.index.duplicates.DuplicateRule` of two grids then filters them and groups cliques: with
   the pixel check (embedding threshold, check distance, pixel threshold) and without thumbnails
   (embedding threshold, hash distance alone, hash distance and similarity together). A rule is chosen
   on A (the highest recall with at most 0.5% impure groups, a margin under the 1% goal; then the
   strictest) and reported on B, for the pixel-checked grid, for the grid without thumbnails, and for
   its embedding-only and hash-only rules.
3. With ``--flickr8k-library NAME``: ``capsearch library duplicates``'s computation on that library (made
   from Flickr8k's images) with the default rule: group counts and sizes, added to the results.

Writes ``<artifacts>/results/near_duplicates.json`` (machine, load average, CPU seconds, model, timings,
choice, per-transform recall).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import commit, machine_info, previous_results  # noqa: E402

from core.atomic import write_json  # noqa: E402
from core.cli.console import RichReporter  # noqa: E402
from core.data.phash import Fingerprint, file_fingerprint  # noqa: E402
from core.data.prepare import prepare_folder  # noqa: E402
from core.data.records import PreparedDataset, load_dataset  # noqa: E402
from core.embed.cache import split_embeddings  # noqa: E402
from core.errors import CapsearchError, DatasetError  # noqa: E402
from core.index.duplicates import (  # noqa: E402
    DuplicateGroup,
    DuplicateRule,
    Pairs,
    candidate_pairs,
    find_duplicate_groups,
    group_pairs,
)
from core.models.loading import load_model  # noqa: E402
from core.paths import results_dir  # noqa: E402
from core.search.duplicates import dataset_duplicates  # noqa: E402

THRESHOLDS = [round(t, 3) for t in np.arange(0.9, 0.9951, 0.01)] + [1.0]  # 1.0: embeddings alone off
HASH_DISTANCES = [-1, 0, 2, 4, 6, 8, 10, 12]  # -1: hashes alone off
LOOSE_DISTANCES = (8, 10, 12, 14, 16)
LOOSE_THRESHOLDS = (0.8, 0.84, 0.88, 0.92)  # with --thresholds: those too
PIXEL_THRESHOLDS = (0.9, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97)
PIXEL_DISTANCES = (10, 12, 14, 16)
WIDEST_DISTANCE = 16  # with the lowest threshold tried: every rule's pairs are among these candidates
MAX_IMPURE = 0.01  # the goal, on the report half
CHOICE_IMPURE = 0.005  # the choice on half A keeps a margin under it: ~250 groups a half, so 1% is 2-3 groups


def subset_folder(library: Path, pairs: list[dict[str, Any]], distractors: int, seed: int) -> Path:
    """Every planted image and ``distractors`` others at random, hard-linked into ``<library>-sub<N>``."""
    planted = {p[k] for p in pairs for k in ("original", "duplicate")}
    others = sorted(p.relative_to(library).as_posix() for p in library.rglob("*.jpg"))
    others = [rel for rel in others if rel not in planted]
    if distractors and distractors < len(others):
        rng = np.random.default_rng(seed)
        others = sorted(rng.choice(others, size=distractors, replace=False).tolist())
    out = library.with_name(f"{library.name}-sub{len(others)}")
    for rel in sorted(planted) + others:
        target = out / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(library / rel, target)
            except OSError:
                shutil.copy2(library / rel, target)
    return out


def prepared(folder: Path, name: str, reporter: RichReporter) -> PreparedDataset:
    """The folder's prepared dataset, reused when it was prepared from this folder."""
    try:
        data = load_dataset(name)
        if Path(data.meta["source"]).resolve() == folder.resolve():
            return data
    except DatasetError:
        pass
    return prepare_folder(folder, name=name, reporter=reporter)


def halves(
    pairs: list[dict[str, Any]], ids: list[str], seed: int
) -> tuple[list[int], list[int], list[list[int]]]:
    """Row sets A and B (each: half the pairs, half the distractors) and, per half, its pairs' rows."""
    row = {image_id: k for k, image_id in enumerate(ids)}
    pair_rows = [
        [row[p["original"].removesuffix(".jpg")], row[p["duplicate"].removesuffix(".jpg")]] for p in pairs
    ]
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(pairs))
    in_pairs = {r for pr in pair_rows for r in pr}
    rest = rng.permutation([k for k in range(len(ids)) if k not in in_pairs]).tolist()
    half_pairs = [order[: len(order) // 2].tolist(), order[len(order) // 2 :].tolist()]
    half_rest = [rest[: len(rest) // 2], rest[len(rest) // 2 :]]
    rows = [
        sorted([r for k in hp for r in pair_rows[k]] + hr)
        for hp, hr in zip(half_pairs, half_rest, strict=True)
    ]
    return rows[0], rows[1], [list(h) for h in half_pairs]


def score(groups: list[DuplicateGroup], ids: list[str], pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of ``pairs`` found (per transform too) and share of impure groups."""
    group_of = {i: n for n, g in enumerate(groups) for i in g.ids}
    planted = {
        frozenset((p["original"].removesuffix(".jpg"), p["duplicate"].removesuffix(".jpg"))) for p in pairs
    }
    found = [
        group_of.get(p["original"].removesuffix(".jpg"), -1)
        == group_of.get(p["duplicate"].removesuffix(".jpg"), -2)
        for p in pairs
    ]
    impure = sum(frozenset(g.ids) not in planted for g in groups)
    by_kind: dict[str, list[bool]] = {}
    for p, ok in zip(pairs, found, strict=True):
        by_kind.setdefault("+".join(p["transforms"]), []).append(ok)
    return {
        "pairs": len(pairs),
        "found": float(np.mean(found)) if found else 0.0,
        "groups": len(groups),
        "impure_groups": impure,
        "impure_share": impure / len(groups) if groups else 0.0,
        "found_by_transform": {k: round(float(np.mean(v)), 4) for k, v in sorted(by_kind.items())},
    }


def rules(thresholds: list[float], loose_thresholds: list[float]) -> list[DuplicateRule]:
    """The grid without thumbnails: embedding threshold, hash distance, loose clause."""
    loose = [(-1, 1.0)] + [(d, t) for d in LOOSE_DISTANCES for t in loose_thresholds]
    return [
        DuplicateRule(float(t), h, ld, float(lt))
        for t in thresholds
        for h in HASH_DISTANCES
        for ld, lt in loose
        if not (t == 1.0 and h < 0 and ld < 0)
    ]


def pixel_rules(thresholds: list[float]) -> list[DuplicateRule]:
    """The grid with thumbnails: embedding threshold, pixel-check distance and threshold."""
    return [
        DuplicateRule(float(t), pixel_threshold=p, pixel_hash_distance=d)
        for t in thresholds
        for d in PIXEL_DISTANCES
        for p in PIXEL_THRESHOLDS
    ]


def evaluate(
    pairs: Pairs, ids: list[str], rule: DuplicateRule, planted: list[dict[str, Any]], checked: bool
) -> dict[str, Any]:
    """``rule``'s groups scored; ``checked``: with the pixel check (else hashes alone, no thumbnails)."""
    pixel = pairs.pixel if checked else None
    groups = group_pairs(pairs.where(rule.accepts(pairs.similarity, pairs.distance, pixel)), ids)
    return {**rule.to_dict(), **score(groups, ids, planted)}


def strictness(r: dict[str, Any]) -> tuple[float, ...]:
    """Higher is stricter (fewer pairs accepted): the tie-break among rules that find as many pairs."""
    return (
        r["threshold"],
        -r["hash_distance"],
        -r["loose_hash_distance"],
        r["loose_threshold"],
        r["pixel_threshold"],
        -r["pixel_hash_distance"],
    )


def choose(rows: list[dict[str, Any]], cap: float = CHOICE_IMPURE) -> dict[str, Any]:
    """The highest recall with at most ``cap`` impure groups (ties: the fewer impure, then the stricter)."""
    ok = [r for r in rows if r["impure_share"] <= cap]
    if ok:
        return max(ok, key=lambda r: (r["found"], -r["impure_share"], *strictness(r)))
    return min(rows, key=lambda r: (r["impure_share"], -r["found"]))


def as_rule(row: dict[str, Any]) -> DuplicateRule:
    return DuplicateRule(*(row[k] for k in DuplicateRule().to_dict()))


def half_pairs(
    vectors: np.ndarray, prints: list[Fingerprint | None], ids: list[str], rows: list[int], widest: float
) -> tuple[Pairs, list[str]]:
    """The candidate pairs of ``rows``, pixel-checked within WIDEST_DISTANCE."""
    hashes = [prints[r].phash if prints[r] else None for r in rows]  # type: ignore[union-attr]
    thumbs = [prints[r].thumb if prints[r] else None for r in rows]  # type: ignore[union-attr]
    pairs = candidate_pairs(vectors[rows], hashes, widest, WIDEST_DISTANCE, thumbs, WIDEST_DISTANCE)
    return pairs, [ids[r] for r in rows]


def only(rule: DuplicateRule, kind: str) -> bool:
    embedding_only = rule.hash_distance < 0 and rule.loose_hash_distance < 0
    hash_only = rule.threshold == 1.0 and rule.loose_hash_distance < 0
    return {"embedding": embedding_only, "hash": hash_only, "hash_and_embedding": True}[kind]


def tune_and_report(
    vectors: np.ndarray,
    prints: list[Fingerprint | None],
    ids: list[str],
    pairs: list[dict[str, Any]],
    seed: int,
    thresholds: list[float],
    loose_thresholds: list[float],
) -> dict[str, Any]:
    """Choose a rule on half A (pixel-checked; and without thumbnails: hash and embedding, embedding-only,
    hash-only) and report each on half B."""
    rows_a, rows_b, (pairs_a, pairs_b) = halves(pairs, ids, seed)
    widest = min(thresholds)
    cand_a, ids_a = half_pairs(vectors, prints, ids, rows_a, widest)
    cand_b, ids_b = half_pairs(vectors, prints, ids, rows_b, widest)
    planted_a, planted_b = [pairs[k] for k in pairs_a], [pairs[k] for k in pairs_b]
    grid, checked_grid = rules(thresholds, loose_thresholds), pixel_rules(thresholds)
    tuned = [evaluate(cand_a, ids_a, rule, planted_a, False) for rule in grid]
    out: dict[str, Any] = {
        "rules_tried": len(grid) + len(checked_grid),
        "candidate_pairs": {"A": len(cand_a), "B": len(cand_b)},
    }
    chosen = choose([evaluate(cand_a, ids_a, rule, planted_a, True) for rule in checked_grid])
    report = evaluate(cand_b, ids_b, as_rule(chosen), planted_b, True)
    out["pixel_checked"] = {"rule": as_rule(chosen).to_dict(), "tuning_half": chosen, "report_half": report}
    for kind in ("hash_and_embedding", "embedding", "hash"):
        chosen = choose([t for t, rule in zip(tuned, grid, strict=True) if only(rule, kind)])
        rule = as_rule(chosen)
        report = evaluate(cand_b, ids_b, rule, planted_b, False)
        out[kind] = {"rule": rule.to_dict(), "tuning_half": chosen, "report_half": report}
    return out


def fingerprints(data: PreparedDataset, reporter: RichReporter) -> tuple[list[Fingerprint | None], float]:
    records = data.split("test")
    start = time.perf_counter()
    out = []
    for k, rec in enumerate(records):
        out.append(file_fingerprint(data.image_path(rec)))
        if k % 500 == 0:
            reporter.update("perceptual hashes and thumbnails", k, len(records))
    return out, time.perf_counter() - start


def flickr8k_library(name: str) -> dict[str, Any]:
    """``capsearch library duplicates NAME`` (the default rule), its groups counted, and the groups the same
    rule makes without the thumbnails' pixel check (hashes alone)."""
    from core.library.library import Library
    from core.library.update import hash_missing
    from core.locks import exclusive

    start = time.perf_counter()
    with Library.open(name) as lib, RichReporter() as reporter:
        model = lib.active
        if model is None:
            raise SystemExit(f"library {name} has nothing embedded")
        with exclusive(lib.folder, reporter.log):
            hashed_now = hash_missing(lib, reporter)
        ids, vectors = lib.index(model, lib.store(model)).all_vectors()
        rows = lib.catalogue.files_by_id(ids.tolist())
        files = [rows[i] for i in ids.tolist()]
        paths, hashes = [f.path for f in files], [f.phash for f in files]
        stored = lib.catalogue.thumbs_by_id(ids.tolist())
        thumbs = [stored.get(f.id) for f in files]
        roots = lib.catalogue.roots()
    out: dict[str, Any] = {
        "library": name,
        "roots": roots,
        "model_id": model.model_id,
        "precision": model.precision,
        "photos": len(ids),
        "hashed_on_open (catalogue migrated from an older format)": hashed_now,
    }
    rule = DuplicateRule()
    for label, checked in (("default_rule", thumbs), ("default_rule_without_thumbnails", None)):
        try:
            groups = find_duplicate_groups(vectors, paths, rule, hashes, checked)
        except CapsearchError as exc:
            out[label] = {"rule": rule.to_dict(), "refused": str(exc)}
            continue
        out[label] = {
            "rule": rule.to_dict(),
            **group_counts(groups),
            "first_groups": [g.to_dict() for g in groups[:10]],
        }
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def flickr8k_split(name: str, model: str, split: str) -> dict[str, Any]:
    """``capsearch duplicates --dataset NAME --split SPLIT`` (the default rule; the Duplicates view's groups)."""
    start = time.perf_counter()
    lm = load_model(model)
    with RichReporter() as reporter:
        found = dataset_duplicates(lm, load_dataset(name), [split], reporter=reporter)
        emb_only = dataset_duplicates(lm, load_dataset(name), [split], reporter=reporter, hashed=False)
    return {
        "dataset": name,
        "split": split,
        "model_id": lm.model_id,
        "precision": lm.precision,
        "images": found.images,
        "rule": found.applied.to_dict(),
        **group_counts(found.groups),
        "embedding_only_at_threshold": group_counts(emb_only.groups),
        "seconds": round(time.perf_counter() - start, 1),
        "first_groups": [g.to_dict() for g in found.groups[:10]],
    }


def group_counts(groups: list[DuplicateGroup]) -> dict[str, int]:
    sizes = [len(g.ids) for g in groups]
    return {"groups": len(groups), "photos_in_groups": sum(sizes), "largest_group": max(sizes, default=0)}


def planted_run(args: argparse.Namespace) -> dict[str, Any]:
    library = args.library.resolve()
    manifest = json.loads((args.manifest or library.with_name(library.name + ".manifest.json")).read_text())
    pairs = manifest["pairs"]
    machine = machine_info()
    with RichReporter() as reporter:
        folder = subset_folder(library, pairs, args.distractors, args.seed)
        data = prepared(folder, folder.name, reporter)
        lm = load_model(args.model, precision=args.precision)
        start = time.perf_counter()
        emb = split_embeddings(lm, data, "test", reporter=reporter)
        embed_seconds = time.perf_counter() - start
        if args.embed_only:
            raise SystemExit(0)
        prints, hash_seconds = fingerprints(data, reporter)
    ids = [r.id for r in emb.records]
    t0 = time.perf_counter()
    thresholds = (
        sorted({*(float(t) for t in args.thresholds.split(",")), 1.0}) if args.thresholds else THRESHOLDS
    )
    loose = sorted({*LOOSE_THRESHOLDS, *thresholds[:-1]}) if args.thresholds else list(LOOSE_THRESHOLDS)
    result = tune_and_report(emb.image_emb, prints, ids, pairs, args.seed, thresholds, loose)
    return {
        "commit": commit(),
        "machine": machine,
        "model_id": lm.model_id,
        "precision": lm.precision,
        "library": {
            "generated_files": manifest["files"],
            "planted_pairs": len(pairs),
            "subset_images": len(ids),
            "distractors": len(ids) - 2 * len(pairs),
            "embed_seconds": round(embed_seconds, 1),
            "reused_cache": emb.reused,
            "images_per_s": round(len(ids) / emb.encode_seconds, 2) if emb.encode_seconds else None,
            "hash_seconds": round(hash_seconds, 1),
            "unhashable": sum(p is None for p in prints),
        },
        "rule": f"on half A: the highest share of pairs found with at most {CHOICE_IMPURE:.1%} impure groups "
        f"(a margin under the {MAX_IMPURE:.0%} goal; ties: the stricter rule); reported on half B. The first "
        "lit run chose at the 1% edge on A and went over 1% on B; the margin was added after it (both kept)",
        **result,
        "sweep_seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", type=Path, help="the generated photo library (planted pairs)")
    parser.add_argument("--manifest", type=Path, help="default: <library>.manifest.json")
    parser.add_argument("--model", help="model name or checkpoint dir")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--distractors", type=int, default=0, help="images besides the planted ones (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--thresholds",
        help="comma-separated similarity thresholds to try (default 0.90-0.99; a random-weight "
        "model needs 0.99+)",
    )
    parser.add_argument("--embed-only", action="store_true", help="stop once the subset is embedded")
    parser.add_argument("--flickr8k-library", help="a library of Flickr8k's images: add its groups")
    parser.add_argument("--flickr8k-dataset", help="a prepared Flickr8k: add the groups of --flickr8k-split")
    parser.add_argument("--flickr8k-split", default="test")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--note", default="", help="added to the results' note (e.g. the load while embedding)"
    )
    args = parser.parse_args(argv)
    out = args.out or results_dir() / "near_duplicates.json"
    cpu0, load0 = time.process_time(), os.getloadavg()[0]
    if args.flickr8k_library or args.flickr8k_dataset:
        payload = previous_results(out)
        if args.flickr8k_library:
            key = "flickr8k_library"
            payload[key] = flickr8k_library(args.flickr8k_library)
        else:
            key = f"flickr8k_{args.flickr8k_split}_split"
            payload[key] = flickr8k_split(args.flickr8k_dataset, args.model, args.flickr8k_split)
    else:
        if args.library is None or args.model is None:
            parser.error("--library and --model are needed (or --flickr8k-library)")
        payload = planted_run(args)
        key = "run"
    payload.setdefault("runs", {})[key] = {
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "load_average_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "note": "shared 2-core CPU (other helpers' jobs ran at the same time) " + args.note,
    }
    write_json(out, payload)
    print(
        json.dumps({k: payload[k] for k in ("pixel_checked", "flickr8k_library") if k in payload}, indent=1)[
            :3000
        ]
    )
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
