"""Generic image folders: walking, content-based image recognition, integrity checks, caption matching."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from core.data.captions import group_captions, parse_captions
from core.data.images import check_image_bytes, looks_like_image
from core.data.records import Collection, ImageRecord
from core.data.splits import random_split
from core.data.validation import ValidationReport
from core.errors import DatasetError
from core.progress import Reporter
from core.safe_text import visible

SKIP_DIRS = frozenset({"__MACOSX"})


@dataclass
class ImageScan:
    """Result of checking the candidate images under a root (paths relative to it, POSIX style)."""

    good: list[str]
    bad: set[str]
    hashes: dict[str, str]
    candidates: set[str] = field(default_factory=set)


def walk_files(root: Path) -> list[str]:
    """Every file under ``root`` as a sorted relative POSIX path.

    Symlinked folders are followed (each real folder once); hidden entries and ``__MACOSX`` are skipped.
    """
    out: list[str] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
        rel_dir = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        out.extend(
            str(rel_dir / f) for f in filenames if not f.startswith(".") and os.path.isfile(Path(dirpath, f))
        )
    return sorted(out)


def is_utf8(name: str) -> bool:
    """False for a name the file system gave as bytes that are not UTF-8 (decoded to lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def scan_images(
    root: Path,
    files: list[str],
    report: ValidationReport,
    label: Callable[[str], str],
    reporter: Reporter,
) -> ImageScan:
    """Check every file that looks like an image (by extension or magic bytes); report the bad ones."""
    candidates = [rel for rel in files if looks_like_image(root / rel)]
    scan = ImageScan(good=[], bad=set(), hashes={}, candidates=set(candidates))
    total = len(candidates)
    for i, rel in enumerate(candidates):
        if i % 64 == 0:
            reporter.check_cancelled()
            reporter.update("validate images", i, total)
        if not is_utf8(rel):
            report.add(
                visible(label(rel)), None, "bad_file_name", "file name is not UTF-8; left out (rename it)"
            )
            scan.bad.add(rel)
            continue
        try:
            data = (root / rel).read_bytes()
        except OSError as exc:
            report.add(label(rel), None, "unreadable_image", f"cannot read file ({exc.strerror or exc})")
            scan.bad.add(rel)
            continue
        scan.hashes[rel] = hashlib.sha256(data).hexdigest()
        issue = check_image_bytes(data)
        if issue is None:
            scan.good.append(rel)
        else:
            report.add(label(rel), None, issue.kind, issue.reason)
            scan.bad.add(rel)
    reporter.update("validate images", total, total)
    return scan


def make_ids(rels: list[str], flat: bool) -> dict[str, str]:
    """Stable ids: the path without extension (``flat``: the file stem); colliding ones keep their extension."""

    def base(rel: str) -> str:
        p = PurePosixPath(rel)
        return p.stem if flat else str(p.with_suffix(""))

    counts = Counter(base(r) for r in rels)
    return {r: base(r) if counts[base(r)] == 1 else (PurePosixPath(r).name if flat else r) for r in rels}


def attach_captions(
    scan: ImageScan,
    entries_by_ref: dict[str, list[str]],
    first_line: dict[str, int],
    resolve: Callable[[str], str | None],
    report: ValidationReport,
    captions_label: str,
    label: Callable[[str], str],
) -> dict[str, list[str]]:
    """Captions per good image; reports captions of missing images and good images without captions."""
    captioned: dict[str, list[str]] = {}
    unusable: dict[str, int] = {}
    for ref, caps in entries_by_ref.items():
        rel = resolve(ref)
        if rel is None:
            report.add(
                captions_label,
                first_line[ref],
                "missing_image",
                f"{ref!r} has {len(caps)} caption(s) but there is no such image",
            )
        elif rel in scan.bad:
            unusable[rel] = unusable.get(rel, 0) + len(caps)
        else:
            captioned.setdefault(rel, []).extend(caps)
    if unusable:
        report.note(
            f"{sum(unusable.values())} caption(s) of {len(unusable)} unusable image(s) were left out "
            "with their images (see the image problems below)"
        )
    for rel in scan.good:
        if not captioned.get(rel):
            report.add(label(rel), None, "uncaptioned_image", "no caption refers to this image; left out")
    return {rel: caps for rel, caps in captioned.items() if caps}


def read_captions(
    path: Path, report: ValidationReport, label: str
) -> tuple[dict[str, list[str]], dict[str, int], str, str]:
    """Parse and group a captions file: (captions per reference, first line per reference, format, sha256)."""
    entries, fmt = parse_captions(path, report, label=label)
    first_line: dict[str, int] = {}
    for e in entries:
        first_line.setdefault(e.image, e.line)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return group_captions(entries, report), first_line, fmt, digest


def _rel_label(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def collect_folder(
    source: Path,
    captions: Path | None,
    ratios: tuple[float, ...],
    seed: int,
    reporter: Reporter,
) -> Collection:
    """A folder of images (walked recursively), captioned by ``captions`` or, without it, a gallery."""
    if not source.is_dir():
        raise DatasetError(f"{source} is not a folder", hint="pass the folder that holds the images")
    report = ValidationReport()
    reporter.update("scan files", 0, None)
    files = walk_files(source)
    scan = scan_images(source, files, report, lambda rel: rel, reporter)
    if not scan.good:
        raise DatasetError(
            f"no readable images found under {source} ({len(scan.bad)} unreadable)",
            hint="point at the folder that holds the images (subfolders are searched)",
        )
    inputs = {f"image:{rel}": h for rel, h in scan.hashes.items()}
    ids = make_ids(scan.good, flat=False)
    facts: dict[str, object] = {"images found": len(scan.good) + len(scan.bad)}
    if captions is None:
        records = {ids[rel]: ImageRecord(ids[rel], rel) for rel in scan.good}
        splits = {"train": [], "val": [], "test": sorted(records)}
        report.note("no captions file: every image is in the test split (a text-to-image search gallery)")
        return Collection(
            "folder", str(source), source, records, splits, "gallery", None, None, inputs, report, facts
        )

    cap_label = _rel_label(captions, source)
    grouped, first_line, fmt, digest = read_captions(captions, report, cap_label)
    inputs[f"captions:{cap_label}"] = digest
    facts.update({"captions file": str(captions.resolve()), "captions format": fmt})
    by_name: dict[str, list[str]] = {}
    for rel in sorted(scan.candidates):
        by_name.setdefault(PurePosixPath(rel).name, []).append(rel)

    def resolve(ref: str) -> str | None:
        if ref in scan.candidates:
            return ref
        matches = by_name.get(PurePosixPath(ref).name, [])
        return matches[0] if "/" not in ref and len(matches) == 1 else None

    captioned = attach_captions(scan, grouped, first_line, resolve, report, cap_label, lambda rel: rel)
    records = {ids[rel]: ImageRecord(ids[rel], rel, tuple(caps)) for rel, caps in captioned.items()}
    splits = random_split(list(records), ratios, seed)
    return Collection(
        "folder", str(source), source, records, splits, "random", seed, tuple(ratios), inputs, report, facts
    )
