"""Flickr8k ingestion from a folder or a ``.zip`` archive (plus an optional download of the public archives).

Recognised layouts (searched up to three folder levels deep, names case-insensitive):

- captions: ``Flickr8k.token.txt`` or ``captions.txt`` (token format or the ``image,caption`` CSV), or
  ``captions.csv``;
- official splits: ``Flickr_8k.trainImages.txt``, ``Flickr_8k.devImages.txt`` (-> val),
  ``Flickr_8k.testImages.txt``;
- images: the folder holding the most image files (``Images/``, ``images/``, ``Flicker8k_Dataset/`` ...).

Archives are never modified: their members are extracted once into a cache under the artifacts root
(``cache/archives/<name>-<sha12>/``), keyed by the archive's checksum.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.atomic import atomic_path, file_sha256, write_json
from core.data.captions import normalize_reference
from core.data.folder import (
    SKIP_DIRS,
    Collection,
    attach_captions,
    make_ids,
    read_captions,
    scan_images,
    walk_files,
)
from core.data.images import IMAGE_EXTENSIONS
from core.data.records import ImageRecord
from core.data.splits import random_split, read_split_list
from core.data.validation import ValidationReport
from core.errors import DatasetError
from core.paths import artifacts_root, safe_name
from core.progress import Reporter

CAPTION_FILES = ("flickr8k.token.txt", "captions.txt", "captions.csv")
SPLIT_FILES = {
    "train": "flickr_8k.trainimages.txt",
    "val": "flickr_8k.devimages.txt",
    "test": "flickr_8k.testimages.txt",
}
SCHEMES = ("auto", "official", "random")
DOWNLOAD_URLS = (
    "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
    "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip",
)
_MAX_DEPTH = 3
_CORRUPT_FILE = ".corrupt-members.json"


@dataclass(frozen=True)
class Root:
    """A folder searched for the layout; ``prefix`` names it in problem reports (``"Flickr8k.zip:"``)."""

    path: Path
    prefix: str

    def label(self, path: Path) -> str:
        return self.prefix + path.relative_to(self.path).as_posix()


@dataclass
class Layout:
    captions: tuple[Root, Path]
    images: tuple[Root, Path]
    lists: dict[str, tuple[Root, Path]]


def extract_zip(archive: Path, report: ValidationReport, reporter: Reporter) -> Path:
    """The archive's members under a checksum-keyed cache folder (extracted on first use, atomically).

    Members whose path escapes the archive root are reported and never written; corrupt members are
    reported on every run (the list is kept beside the extracted files).
    """
    label = archive.name
    reporter.update(f"checksum {label}", 0, None)
    cache = artifacts_root() / "cache" / "archives" / f"{safe_name(archive.stem)}-{file_sha256(archive)[:12]}"
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{archive} is not a readable zip archive ({exc})") from exc
    with zf:
        members = []
        for info in zf.infolist():
            if info.is_dir():
                continue
            norm = normalize_reference(info.filename)
            if norm is None:
                report.add(
                    label, None, "path_escape", f"member {info.filename!r} escapes the archive; not extracted"
                )
                continue
            if any(p.startswith(".") or p in SKIP_DIRS for p in PurePosixPath(norm).parts):
                continue
            members.append((info, norm))
        if not cache.is_dir():
            _extract_members(zf, members, cache, reporter)
    corrupt_file = cache / _CORRUPT_FILE
    if corrupt_file.is_file():
        for name, reason in json.loads(corrupt_file.read_text(encoding="utf-8")):
            report.add(f"{label}:{name}", None, "unreadable_image", f"corrupt archive member ({reason})")
    return cache


def _extract_members(
    zf: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, str]], cache: Path, reporter: Reporter
) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache.parent))
    corrupt: list[tuple[str, str]] = []
    try:
        for i, (info, norm) in enumerate(members):
            if i % 64 == 0:
                reporter.check_cancelled()
                reporter.update("extract archive", i, len(members))
            target = tmp / norm
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
                target.unlink(missing_ok=True)
                corrupt.append((norm, str(exc)))
        reporter.update("extract archive", len(members), len(members))
        if corrupt:
            write_json(tmp / _CORRUPT_FILE, corrupt)
        try:
            os.replace(tmp, cache)
        except OSError:
            if not cache.is_dir():  # not a concurrent extraction that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_flickr8k(dest: Path | None = None, reporter: Reporter | None = None) -> Path:
    """Fetch the public Flickr8k archives (about 1 GB) into ``dest``; returns the folder.

    Needs a network (there is none on the development machines, so this is untested there).
    """
    reporter = reporter or Reporter()
    dest = dest or artifacts_root() / "downloads" / "flickr8k"
    for url in DOWNLOAD_URLS:
        target = dest / url.rsplit("/", 1)[1]
        if target.is_file():
            continue
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, atomic_path(target) as tmp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                done = 0
                with open(tmp, "wb") as fh:
                    while chunk := resp.read(1 << 20):
                        fh.write(chunk)
                        done += len(chunk)
                        reporter.update(f"download {target.name}", done, total)
                        reporter.check_cancelled()
        except (urllib.error.URLError, OSError) as exc:
            raise DatasetError(
                f"cannot download {url} ({getattr(exc, 'reason', exc)})",
                hint="without a network, fetch the Flickr8k archives by hand and pass their folder or zip",
            ) from exc
    return dest


def _search(roots: list[Root]) -> tuple[dict[str, tuple[Root, Path]], list[tuple[int, Root, Path]]]:
    """Known files by lower-case name (shallowest first) and image-file counts per folder."""
    files: dict[str, tuple[int, Root, Path]] = {}
    counts: list[tuple[int, Root, Path]] = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root.path, followlinks=True):
            here = Path(dirpath)
            depth = len(here.relative_to(root.path).parts)
            dirnames[:] = (
                []
                if depth >= _MAX_DEPTH
                else sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
            )
            n_images = 0
            for f in sorted(filenames):
                low = f.lower()
                known = low in CAPTION_FILES or low in SPLIT_FILES.values()
                if known and (low not in files or depth < files[low][0]):
                    files[low] = (depth, root, here / f)
                n_images += Path(low).suffix in IMAGE_EXTENSIONS
            if n_images:
                counts.append((n_images, root, here))
    return {k: (r, p) for k, (_, r, p) in files.items()}, counts


def find_layout(roots: list[Root]) -> Layout:
    """Locate the captions file, the image folder and the official split lists under ``roots``."""
    files, counts = _search(roots)
    captions = next((files[n] for n in CAPTION_FILES if n in files), None)
    where = ", ".join(str(r.path) for r in roots)
    if captions is None:
        raise DatasetError(
            f"no Flickr8k captions file in {where}",
            hint="expected Flickr8k.token.txt or captions.txt (searched three folder levels deep)",
        )
    if not counts:
        raise DatasetError(
            f"no images found in {where}", hint="expected a folder of .jpg files such as Images/"
        )
    best = max(c[0] for c in counts)
    _, img_root, img_dir = next(c for c in counts if c[0] == best)
    lists = {split: files[name] for split, name in SPLIT_FILES.items() if name in files}
    return Layout(captions=captions, images=(img_root, img_dir), lists=lists)


def _roots(source: Path, report: ValidationReport, reporter: Reporter) -> list[Root]:
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise DatasetError(f"{source} is neither a folder nor a zip archive")
        return [Root(extract_zip(source, report, reporter), f"{source.name}:")]
    if not source.is_dir():
        raise DatasetError(
            f"no such folder or archive: {source}", hint="pass the Flickr8k folder or its .zip"
        )
    roots = [Root(source, "")]
    try:
        find_layout(roots)
    except DatasetError:
        archives = sorted(p for p in source.iterdir() if p.suffix.lower() == ".zip" and p.is_file())
        if not archives:
            raise
        roots += [Root(extract_zip(a, report, reporter), f"{a.name}:") for a in archives]
    return roots


def collect_flickr8k(
    source: Path, ratios: tuple[float, ...], seed: int, scheme: str, reporter: Reporter
) -> Collection:
    """Validate Flickr8k at ``source`` (folder or zip) and split it (official lists or seeded random)."""
    if scheme not in SCHEMES:
        raise DatasetError(f"unknown split scheme {scheme!r}", hint=f"use one of {', '.join(SCHEMES)}")
    report = ValidationReport()
    layout = find_layout(_roots(source, report, reporter))
    img_root, img_dir = layout.images
    img_prefix = img_root.label(img_dir) + "/" if img_dir != img_root.path else img_root.prefix

    def label(rel: str) -> str:
        return img_prefix + rel

    scan = scan_images(img_dir, walk_files(img_dir), report, label, reporter)
    by_name: dict[str, str] = {}
    for rel in sorted(scan.candidates):
        name = PurePosixPath(rel).name
        if name in by_name:
            report.add(
                label(rel), None, "duplicate_name", f"same file name as {label(by_name[name])}; left out"
            )
            if rel in scan.good:
                scan.good.remove(rel)
                scan.bad.add(rel)
        else:
            by_name[name] = rel

    cap_root, cap_path = layout.captions
    cap_label = cap_root.label(cap_path)
    grouped, first_line, fmt, digest = read_captions(cap_path, report, cap_label)
    inputs = {f"image:{label(rel)}": h for rel, h in scan.hashes.items()}
    inputs[f"captions:{cap_label}"] = digest

    def resolve(ref: str) -> str | None:
        if ref in scan.candidates:
            return ref
        return by_name.get(ref) if "/" not in ref else None

    captioned = attach_captions(scan, grouped, first_line, resolve, report, cap_label, label)
    ids = make_ids(sorted(captioned), flat=True)
    records = {ids[rel]: ImageRecord(ids[rel], rel, tuple(caps)) for rel, caps in captioned.items()}
    facts: dict[str, object] = {
        "captions file": cap_label,
        "captions format": fmt,
        "image folder": img_prefix or ".",
        "images found": len(scan.good) + len(scan.bad),
    }
    common = (str(source), img_dir, records)

    if scheme == "auto" and 0 < len(layout.lists) < len(SPLIT_FILES):
        missing = [SPLIT_FILES[s] for s in SPLIT_FILES if s not in layout.lists]
        list_root, list_path = next(iter(layout.lists.values()))
        report.add(
            list_root.label(list_path.parent) or ".",
            None,
            "missing_split_list",
            f"official split list(s) missing beside {list_path.name}: {', '.join(missing)}; random split used",
        )
    if scheme == "official" and len(layout.lists) < len(SPLIT_FILES):
        raise DatasetError(
            "the official Flickr8k split lists are not all present",
            hint="expected Flickr_8k.trainImages.txt, Flickr_8k.devImages.txt and Flickr_8k.testImages.txt; "
            "or use the random split scheme",
        )
    if len(layout.lists) == len(SPLIT_FILES) and scheme != "random":
        splits, unassigned = _official_split(layout.lists, resolve, ids, report)
        if unassigned:
            names = ", ".join(sorted(records[i].image for i in unassigned))
            report.note(
                f"{len(unassigned)} usable image(s) are in no official split list and in no split: {names}"
            )
        inputs.update({f"split:{r.label(p)}": file_sha256(p) for r, p in layout.lists.values()})
        return Collection("flickr8k", *common, splits, "official", None, None, inputs, report, facts)
    if layout.lists:
        report.note("official split lists ignored: the random split scheme was asked for")
    splits = random_split(list(records), ratios, seed)
    return Collection("flickr8k", *common, splits, "random", seed, tuple(ratios), inputs, report, facts)


def _official_split(
    lists: dict[str, tuple[Root, Path]],
    resolve: Callable[[str], str | None],
    ids: dict[str, str],
    report: ValidationReport,
) -> tuple[dict[str, list[str]], list[str]]:
    """Ids per split from the official lists; images listed twice or missing are reported."""
    assigned: dict[str, str] = {}
    splits: dict[str, list[str]] = {}
    for split in SPLIT_FILES:
        root, path = lists[split]
        lab = root.label(path)
        members: list[str] = []
        for line, name in read_split_list(path, lab, report):
            ref = normalize_reference(name)
            rel = resolve(ref) if ref is not None else None
            if ref is None:
                report.add(lab, line, "path_escape", f"image path {name!r} escapes the dataset root")
            elif rel is None:
                report.add(lab, line, "missing_image", f"{name!r} is listed but there is no such image")
            elif rel not in ids:
                continue  # an unusable or uncaptioned image: already reported
            elif ids[rel] in assigned:
                report.add(
                    lab, line, "split_overlap", f"{name!r} is already in the {assigned[ids[rel]]} split"
                )
            else:
                assigned[ids[rel]] = split
                members.append(ids[rel])
        splits[split] = sorted(members)
    return splits, sorted(set(ids.values()) - set(assigned))
