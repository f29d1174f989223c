"""Validation problems and the human-readable report written beside a prepared dataset."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Every problem kind, with the one-line meaning the report prints in its summary.
KINDS: dict[str, str] = {
    "empty_file": "zero-byte files",
    "not_an_image": "files with an image name whose content is not an image",
    "unreadable_image": "images that cannot be decoded",
    "truncated_image": "truncated images",
    "decompression_bomb": "images over Pillow's decompression-bomb limit",
    "missing_image": "images referenced but not found",
    "uncaptioned_image": "images without any caption",
    "empty_caption": "empty or whitespace-only captions",
    "duplicate_caption": "exact repeats of an earlier caption line (same image, #n and text)",
    "malformed_line": "lines with the wrong number of fields or invalid structure",
    "bad_suffix": "caption ids without a valid #n suffix",
    "bad_encoding": "lines that are not valid UTF-8",
    "bad_file_name": "files whose name is not valid UTF-8 (left out)",
    "path_escape": "paths that escape the dataset root (rejected)",
    "duplicate_name": "images whose file name is not unique (first one kept)",
    "split_overlap": "images listed in more than one split list (first list kept)",
    "missing_split_list": "official split lists that are incomplete",
}


@dataclass(frozen=True)
class Problem:
    """One problem found in the inputs: the file (and 1-based line, if any) and what is wrong."""

    file: str
    line: int | None
    kind: str
    message: str

    def render(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: [{self.kind}] {self.message}"

    def _key(self) -> tuple[str, int, str, str]:
        return (self.file, self.line or 0, self.kind, self.message)


@dataclass
class ValidationReport:
    """Problems plus free-form notes, rendered as a deterministic text report (no timestamps)."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, file: str, line: int | None, kind: str, message: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        self.problems.append(Problem(file, line, kind, message))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def extend(self, other: ValidationReport) -> None:
        self.problems.extend(other.problems)
        self.notes.extend(other.notes)

    def __len__(self) -> int:
        return len(self.problems)

    def counts(self) -> dict[str, int]:
        """Problem count per kind (only kinds that occurred), in the order of :data:`KINDS`."""
        c = Counter(p.kind for p in self.problems)
        return {k: c[k] for k in KINDS if c[k]}

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def sorted(self) -> list[Problem]:
        return sorted(self.problems, key=Problem._key)

    def render(self, title: str, facts: dict[str, object]) -> str:
        """The report: a title, key facts, a summary per problem kind, notes, then every problem."""
        lines = [title, "=" * len(title), ""]
        width = max((len(k) for k in facts), default=0)
        lines += [f"{k.ljust(width)}  {v}" for k, v in facts.items()]
        lines += ["", f"Problems: {len(self.problems)}"]
        lines += [f"  {n:>6}  {kind}: {KINDS[kind]}" for kind, n in self.counts().items()]
        if self.notes:
            lines += ["", "Notes:"] + [f"  - {n}" for n in self.notes]
        if self.problems:
            lines += ["", "Details:"] + [f"  {p.render()}" for p in self.sorted()]
        return "\n".join(lines) + "\n"
