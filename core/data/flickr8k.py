"""Flickr8k ingestion from a folder or a ``.zip`` archive (plus an optional download of the public archives).

Recognised layouts (searched up to three folder levels deep, names case-insensitive):

- captions: ``Flickr8k.token.txt`` or ``captions.txt`` (token format or the ``image,caption`` CSV), or
  ``captions.csv``;
- official splits: ``Flickr_8k.trainImages.txt``, ``Flickr_8k.devImages.txt`` (-> val),
  ``Flickr_8k.testImages.txt``;
- images: the folder holding the most image files (``Images/``, ``images/``, ``Flicker8k_Dataset/`` ...).

A ``.zip`` is read through :func:`core.data.archives.extract_zip` (extracted once into a checksum-keyed cache).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.atomic import atomic_path, file_sha256
from core.data.archives import extract_zip
from core.data.captions import normalize_reference
from core.data.folder import (
    SKIP_DIRS,
    ImageScan,
    attach_captions,
    make_ids,
    read_captions,
    scan_images,
    walk_files,
)
from core.data.images import IMAGE_EXTENSIONS
from core.data.records import Collection, ImageRecord
from core.data.splits import random_split, read_split_list
from core.data.validation import ValidationReport
from core.errors import DatasetError
from core.paths import artifacts_root
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
    by_name = _by_file_name(scan, report, label)

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
    splits, scheme, split_seed, split_ratios = _split(
        layout, scheme, ratios, seed, resolve, ids, records, inputs, report
    )
    return Collection(
        "flickr8k",
        str(source),
        img_dir,
        records,
        splits,
        scheme,
        split_seed,
        split_ratios,
        inputs,
        report,
        facts,
    )


def _by_file_name(scan: ImageScan, report: ValidationReport, label: Callable[[str], str]) -> dict[str, str]:
    """Image paths by file name (the captions and split lists name images so); a second image with a name
    already taken is reported and left out."""
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
    return by_name


def _split(
    layout: Layout,
    scheme: str,
    ratios: tuple[float, ...],
    seed: int,
    resolve: Callable[[str], str | None],
    ids: dict[str, str],
    records: dict[str, ImageRecord],
    inputs: dict[str, str],
    report: ValidationReport,
) -> tuple[dict[str, list[str]], str, int | None, tuple[float, ...] | None]:
    """Ids per split, the scheme used, and its seed and ratios: the official lists when all are there and
    the scheme allows, else a seeded random split (the lists' checksums join ``inputs``)."""
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
        return splits, "official", None, None
    if layout.lists:
        report.note("official split lists ignored: the random split scheme was asked for")
    return random_split(list(records), ratios, seed), "random", seed, tuple(ratios)


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
