"""Prepare datasets: ingest, validate, split, and write the prepared format (see :mod:`core.data.records`).

Every output file is written atomically, ``dataset.json`` last. Outputs hold no timestamps and follow a
fixed order, so preparing the same inputs twice gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from core.atomic import temp_prefix, write_json, write_jsonl, write_text
from core.data import synthetic
from core.data.flickr8k import collect_flickr8k
from core.data.folder import collect_folder
from core.data.records import (
    META_FILE,
    REPORT_FILE,
    SPLITS,
    Collection,
    ImageRecord,
    PreparedDataset,
    load_dataset,
)
from core.data.splits import DEFAULT_RATIOS, check_ratios, random_split
from core.data.validation import ValidationReport
from core.errors import DatasetError
from core.locks import exclusive
from core.paths import datasets_dir, safe_name
from core.progress import Reporter, ensure

SCENES_FILE = "scenes.jsonl"


def _out_dir(out: Path | None, name: str, source: Path | None = None) -> Path:
    out = (Path(out) if out is not None else datasets_dir() / name).resolve()
    if source is not None and source.is_dir() and out.is_relative_to(source.resolve()):
        raise DatasetError(
            f"output folder {out} is inside the source {source}",
            hint="sources are never modified: pick another --out",
        )
    return out


def _checksum(collection: Collection) -> str:
    """sha256 over every input file's hash and the split settings (it keys caches built on the dataset)."""
    payload = {
        "inputs": sorted(collection.inputs.items()),
        "scheme": collection.scheme,
        "seed": collection.seed,
        "ratios": collection.ratios,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _why_empty(report: ValidationReport) -> str:
    """The first problem that explains an empty dataset, from the validation report."""
    for kind in ("missing_image", "path_escape", "uncaptioned_image", "unreadable_image"):
        found = report.of_kind(kind)
        if found:
            return f"{len(found)} {kind.replace('_', ' ')} problem(s), the first: {found[0].render()}"
    return (
        "the folder holds no image files"
        if not len(report)
        else f"first problem: {report.sorted()[0].render()}"
    )


def require_images(collection: Collection) -> Collection:
    """``collection`` when it holds at least one usable image; else a DatasetError saying why (before
    anything is written)."""
    if not collection.records:
        raise DatasetError(
            f"no usable image in {collection.source}: {_why_empty(collection.report)}",
            hint=(
                "check that the captions name files under the image folder (paths relative to it); "
                "nothing was written"
            ),
        )
    return collection


def stored_root(root: Path, folder: Path) -> str:
    """The image root as ``dataset.json`` keeps it: relative to the dataset's folder when inside it (images
    it generated or extracted), so that the folder still works moved, copied or mounted elsewhere (another
    artifacts root, a container volume); else absolute."""
    root, folder = root.resolve(), folder.resolve()
    return str(root.relative_to(folder)) if root.is_relative_to(folder) else str(root)


def write_prepared(collection: Collection, out: Path, name: str, reporter: Reporter) -> PreparedDataset:
    """Write the split JSONL files, ``report.txt`` and ``dataset.json`` (last) into ``out``."""
    reporter.check_cancelled()
    out.mkdir(parents=True, exist_ok=True)
    records = collection.records
    counts: dict[str, dict[str, int]] = {}
    for i, split in enumerate(SPLITS):
        rows = [records[rid].to_row() for rid in collection.splits.get(split, [])]
        counts[split] = {"images": len(rows), "captions": sum(len(r["captions"]) for r in rows)}
        path = out / f"{split}.jsonl"
        if rows:
            write_jsonl(path, rows)
        else:
            path.unlink(missing_ok=True)
        reporter.update("write dataset", i + 1, len(SPLITS))
    in_splits = {rid for ids in collection.splits.values() for rid in ids}
    report = collection.report
    meta = {
        "name": name,
        "kind": collection.kind,
        "source": collection.source,
        "root": stored_root(collection.root, out),
        "splits": counts,
        "split_scheme": collection.scheme,
        "seed": collection.seed,
        "ratios": list(collection.ratios) if collection.ratios is not None else None,
        "input_checksum": _checksum(collection),
        "images": len(records),
        "captions": sum(len(r.captions) for r in records.values()),
        "unassigned": len(records) - len(in_splits),
        "problems": len(report),
        "problem_kinds": report.counts(),
    }
    facts: dict[str, object] = {
        "dataset": name,
        "kind": collection.kind,
        "source": collection.source,
        "image root": str(collection.root.resolve()),
        **collection.facts,
        "split scheme": collection.scheme,
    }
    if collection.seed is not None:
        facts.update({"seed": collection.seed, "ratios": ",".join(f"{r:g}" for r in collection.ratios or ())})
    facts.update({"usable images": f"{meta['images']:,}", "captions": f"{meta['captions']:,}"})
    for split, c in counts.items():
        facts[split] = f"{c['images']:,} images, {c['captions']:,} captions"
    if meta["unassigned"]:
        facts["in no split"] = f"{meta['unassigned']:,} images"
    facts["input checksum"] = meta["input_checksum"]
    write_text(out / REPORT_FILE, report.render(f"Validation report: {name}", facts))
    write_json(out / META_FILE, meta)
    return load_dataset(out)


def prepare_flickr8k(
    source: Path,
    out: Path | None = None,
    name: str = "flickr8k",
    ratios: tuple[float, ...] = DEFAULT_RATIOS,
    seed: int = 42,
    reporter: Reporter | None = None,
    scheme: str = "auto",
) -> PreparedDataset:
    """Flickr8k from a folder or zip; ``scheme`` "auto" uses the official lists when all three exist."""
    reporter = ensure(reporter)
    check_ratios(tuple(ratios))
    source = Path(source).resolve()
    name = safe_name(name)
    target = _out_dir(out, name, source)
    collection = require_images(collect_flickr8k(source, tuple(ratios), seed, scheme, reporter))
    with exclusive(target, reporter.log):
        return write_prepared(collection, target, name, reporter)


def prepare_folder(
    source: Path,
    captions: Path | None = None,
    out: Path | None = None,
    name: str | None = None,
    ratios: tuple[float, ...] = DEFAULT_RATIOS,
    seed: int = 42,
    reporter: Reporter | None = None,
) -> PreparedDataset:
    """A folder of images with a captions file (random split), or without one (a "test" search gallery)."""
    reporter = ensure(reporter)
    check_ratios(tuple(ratios))
    source = Path(source).resolve()
    name = safe_name(name or source.name)
    target = _out_dir(out, name, source)
    collection = require_images(
        collect_folder(source, Path(captions) if captions else None, tuple(ratios), seed, reporter)
    )
    with exclusive(target, reporter.log):
        return write_prepared(collection, target, name, reporter)


def _sync_image_dir(target: Path, files: dict[str, bytes]) -> None:
    """Make ``target`` hold exactly ``files``; an unchanged folder is left alone, a changed one swapped in whole."""
    if target.is_dir():
        existing = sorted(p.name for p in target.iterdir())
        if existing == sorted(files) and all((target / n).read_bytes() == b for n, b in files.items()):
            return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target.name), suffix=".new", dir=target.parent))
    old = target.with_name(f"{temp_prefix(target.name)}old")
    try:
        for file_name, data in files.items():
            (tmp / file_name).write_bytes(data)
        if target.exists():
            os.rename(target, old)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def prepare_synthetic(
    n: int = 1000,
    seed: int = 0,
    out: Path | None = None,
    name: str = "synthetic",
    reporter: Reporter | None = None,
) -> PreparedDataset:
    """Generate the built-in captioned scenes (images under ``<out>/images/``) and a seeded 70/15/15 split."""
    reporter = ensure(reporter)
    if n < 1:
        raise DatasetError(f"--n must be at least 1 (got {n})")
    name = safe_name(name)
    target = _out_dir(out, name)
    scenes = synthetic.generate(n, seed)
    files: dict[str, bytes] = {}
    for i, scene in enumerate(scenes):
        if i % 64 == 0:
            reporter.check_cancelled()
            reporter.update("draw scenes", i, n)
        files[f"{scene.id}.png"] = synthetic.png_bytes(synthetic.render(scene))
    reporter.update("draw scenes", n, n)
    with exclusive(target, reporter.log):
        _sync_image_dir(target / "images", files)
        write_jsonl(target / SCENES_FILE, [s.to_json() for s in scenes])
        records = {s.id: ImageRecord(s.id, f"{s.id}.png", s.captions) for s in scenes}
        inputs = {f"image:{k}": hashlib.sha256(v).hexdigest() for k, v in files.items()}
        inputs["generator"] = f"captioned-scenes v{synthetic.GENERATOR_VERSION} n={n} seed={seed}"
        report = ValidationReport()
        report.note(f"generated deterministically; the drawn scene of every image is in {SCENES_FILE}")
        collection = Collection(
            kind="synthetic",
            source=f"built-in captioned scenes (n={n}, seed={seed})",
            root=target / "images",
            records=records,
            splits=random_split(list(records), DEFAULT_RATIOS, seed),
            scheme="random",
            seed=seed,
            ratios=DEFAULT_RATIOS,
            inputs=inputs,
            report=report,
            facts={"near-duplicates": sum(s.mutation_of is not None for s in scenes)},
        )
        return write_prepared(collection, target, name, reporter)
