"""Caption file parsers: token (``image#n<TAB>caption``), CSV (``image,caption``) and JSONL.

Parsers never raise on bad lines: each one is reported to a :class:`ValidationReport` with its file and
line, and every good line is kept. Only an unreadable file, or one without a single usable line, is fatal.
"""

from __future__ import annotations

import csv
import json
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.data.validation import ValidationReport
from core.errors import DatasetError

FORMATS = ("token", "csv", "jsonl")
_DRIVE = re.compile(r"^[A-Za-z]:[/\\]")  # a Windows drive path; "A:.jpg" is a POSIX file name


@dataclass(frozen=True)
class CaptionEntry:
    """One caption for one image reference (a normalised relative path), with where it was read."""

    image: str
    caption: str
    file: str
    line: int
    number: int | None = None


def normalize_reference(ref: str) -> str | None:
    """A caption's image path as a normalised relative POSIX path; ``None`` if it escapes the root."""
    ref = ref.strip().replace("\\", "/")
    if ref.startswith("/") or _DRIVE.match(ref):
        return None
    norm = posixpath.normpath(ref)
    if norm == ".." or norm.startswith("../"):
        return None
    return norm


def read_lines(path: Path, label: str, report: ValidationReport) -> list[tuple[int, str]]:
    """The file's lines (1-based numbers, line endings kept), reporting lines that are not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(
            f"cannot read captions file {path}: {exc.strerror or exc}", hint="check the path"
        ) from exc
    out = []
    for no, raw in enumerate(data.splitlines(keepends=True), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            report.add(label, no, "bad_encoding", f"not valid UTF-8 at byte {exc.start} of the line")
            continue
        if no == 1:
            text = text.removeprefix("\ufeff")
        out.append((no, text))
    return out


def detect_format(path: Path, lines: list[tuple[int, str]]) -> str:
    """``token``, ``csv`` or ``jsonl``, from the extension and then the first non-blank line."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    first = next((t.strip() for _, t in lines if t.strip()), "")
    if first.startswith("{"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "token" if "\t" in first else "csv"


class _Parser:
    def __init__(self, label: str, report: ValidationReport) -> None:
        self.label = label
        self.report = report
        self.entries: list[CaptionEntry] = []

    def add(self, line: int, ref: str, caption: str, number: int | None = None) -> None:
        image = normalize_reference(ref)
        if image is None:
            self.report.add(
                self.label, line, "path_escape", f"image path {ref.strip()!r} escapes the dataset root"
            )
        elif image in (".", ""):
            self.report.add(self.label, line, "malformed_line", "empty image name")
        else:
            self.entries.append(CaptionEntry(image, caption.strip(), self.label, line, number))

    def token(self, lines: list[tuple[int, str]]) -> None:
        for no, text in lines:
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            fields = text.split("\t")
            if len(fields) != 2:
                self.report.add(
                    self.label,
                    no,
                    "malformed_line",
                    f"expected 2 tab-separated fields (image#n, caption), found {len(fields)}",
                )
                continue
            name, sep, number = fields[0].rpartition("#")
            if not sep or not name or not number.strip().isdigit():
                self.report.add(
                    self.label, no, "bad_suffix", f"{fields[0]!r} does not end in #n (n = 0, 1, 2, ...)"
                )
                continue
            self.add(no, name, fields[1], int(number))

    def csv(self, lines: list[tuple[int, str]]) -> None:
        current = [0]

        def numbered() -> Iterator[str]:
            for no, text in lines:
                current[0] = no
                yield text

        reader = csv.reader(numbered())
        columns: tuple[int, int, int] | None = None  # (image index, caption index, field count)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                self.report.add(self.label, current[0], "malformed_line", f"CSV error: {exc}")
                continue
            if not row or not any(f.strip() for f in row):
                continue
            if columns is None:
                names = [f.strip().lower() for f in row]
                if "image" in names and "caption" in names:
                    columns = (names.index("image"), names.index("caption"), len(names))
                    continue
                columns = (0, 1, 2)
            image_col, caption_col, width = columns
            if len(row) != width:
                self.report.add(
                    self.label,
                    current[0],
                    "malformed_line",
                    f"expected {width} comma-separated fields, found {len(row)} (quote captions with commas)",
                )
                continue
            self.add(current[0], row[image_col], row[caption_col])

    def jsonl(self, lines: list[tuple[int, str]]) -> None:
        for no, text in lines:
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except ValueError as exc:
                self.report.add(self.label, no, "malformed_line", f"invalid JSON ({exc.args[0]})")
                continue
            problem = _jsonl_problem(obj)
            if problem:
                self.report.add(self.label, no, "malformed_line", problem)
                continue
            captions = obj["captions"] if "captions" in obj else [obj["caption"]]
            if not captions:
                self.add(no, obj["image"], "")
            for caption in captions:
                self.add(no, obj["image"], caption)


def _jsonl_problem(obj: object) -> str | None:
    if not isinstance(obj, dict):
        return 'expected an object {"image": ..., "captions": [...]}'
    if not isinstance(obj.get("image"), str):
        return 'missing or non-string "image"'
    if "captions" in obj:
        caps = obj["captions"]
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            return '"captions" must be a list of strings'
        return None
    if isinstance(obj.get("caption"), str):
        return None
    return 'missing "captions" (a list of strings)'


def parse_captions(
    path: Path, report: ValidationReport, label: str | None = None, fmt: str | None = None
) -> tuple[list[CaptionEntry], str]:
    """Parse a captions file; returns the entries in file order and the format used.

    Empty captions are kept here (as ``""``) so that :func:`group_captions` can report them.
    Raises :class:`DatasetError` if the file cannot be read or yields no usable line at all.
    """
    label = label or path.name
    lines = read_lines(path, label, report)
    fmt = fmt or detect_format(path, lines)
    if fmt not in FORMATS:
        raise DatasetError(f"unknown captions format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    parser = _Parser(label, report)
    getattr(parser, fmt)(lines)
    if not parser.entries:
        first = next((p.render() for p in report.problems if p.file == label), "the file is empty")
        raise DatasetError(
            f"no usable caption lines in {path} (read as {fmt}; first problem: {first})",
            hint="captions are `image#n<TAB>caption`, CSV `image,caption` with a header, "
            'or JSONL {"image": ..., "captions": [...]}',
        )
    return parser.entries, fmt


def group_captions(entries: list[CaptionEntry], report: ValidationReport) -> dict[str, list[str]]:
    """Captions per image reference in source order; empty and exact-duplicate captions are reported.

    A duplicate repeats an earlier entry exactly: the same image, caption and (token format) ``#n``.
    Two numbered captions with the same text are two annotations and both are kept (Flickr8k has ten).
    """
    grouped: dict[str, list[str]] = {}
    seen: set[tuple[str, int | None, str]] = set()
    for e in entries:
        caps = grouped.setdefault(e.image, [])
        key = (e.image, e.number, e.caption)
        if not e.caption:
            report.add(e.file, e.line, "empty_caption", f"empty or whitespace-only caption for {e.image!r}")
        elif key in seen:
            what = e.image if e.number is None else f"{e.image}#{e.number}"
            report.add(
                e.file,
                e.line,
                "duplicate_caption",
                f"exact repeat of an earlier caption of {what!r}: {e.caption!r}",
            )
        else:
            seen.add(key)
            caps.append(e.caption)
    return grouped
