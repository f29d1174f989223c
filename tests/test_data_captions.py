"""Caption file parsers (token, CSV, JSONL): good input, every malformed-line kind, duplicates."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.data.captions import detect_format, group_captions, normalize_reference, parse_captions, read_lines
from core.data.validation import ValidationReport
from core.errors import DatasetError


def _parse(tmp_path: Path, name: str, data: bytes) -> tuple[list, str, ValidationReport]:
    path = tmp_path / name
    path.write_bytes(data)
    report = ValidationReport()
    entries, fmt = parse_captions(path, report)
    return entries, fmt, report


def _kinds(report: ValidationReport) -> list[tuple[int | None, str]]:
    return [(p.line, p.kind) for p in report.sorted()]


def test_token_format_good_and_bad_lines(tmp_path: Path) -> None:
    data = (
        (
            "\ufeffa.jpg#0\tA dog runs .\n"
            "a.jpg#1\tA dog plays .\r\n"
            "\n"
            "b.jpg#0\tonly\textra field\n"  # 4: wrong field count
            "b.jpg\tno suffix\n"  # 5: bad suffix
            "b.jpg#x\tletters\n"  # 6: bad suffix
            "b.jpg#0\t   \n"  # 7: empty caption (reported by group_captions)
            "../etc/c.jpg#0\tescape\n"  # 8: path escape
            "/abs/d.jpg#0\tabsolute\n"  # 9: path escape
        ).encode()
        + b"b.jpg#1\t\xff\xfe bad bytes\n"
        + b"b.jpg#2\tA cat .\n"
    )
    entries, fmt, report = _parse(tmp_path, "Flickr8k.token.txt", data)
    assert fmt == "token"
    assert [(e.image, e.number, e.caption, e.line) for e in entries] == [
        ("a.jpg", 0, "A dog runs .", 1),
        ("a.jpg", 1, "A dog plays .", 2),
        ("b.jpg", 0, "", 7),
        ("b.jpg", 2, "A cat .", 11),
    ]
    assert _kinds(report) == [
        (4, "malformed_line"),
        (5, "bad_suffix"),
        (6, "bad_suffix"),
        (8, "path_escape"),
        (9, "path_escape"),
        (10, "bad_encoding"),
    ]
    assert "found 3" in report.of_kind("malformed_line")[0].message
    assert all(p.file == "Flickr8k.token.txt" for p in report.problems)
    grouped = group_captions(entries, report)
    assert grouped == {"a.jpg": ["A dog runs .", "A dog plays ."], "b.jpg": ["A cat ."]}
    assert [(p.line, p.kind) for p in report.of_kind("empty_caption")] == [(7, "empty_caption")]


def test_duplicates_are_exact_repeats_of_a_line(tmp_path: Path) -> None:
    data = b"a.jpg#0\tSame .\na.jpg#1\tSame .\na.jpg#0\tSame .\n"
    entries, _, report = _parse(tmp_path, "caps.txt", data)
    grouped = group_captions(entries, report)
    # two annotators writing the same words are kept; the repeated line #0 is reported
    assert grouped == {"a.jpg": ["Same .", "Same ."]}
    assert [(p.line, p.kind) for p in report.problems] == [(3, "duplicate_caption")]
    assert "a.jpg#0" in report.problems[0].message


def test_csv_with_header_quotes_and_bad_rows(tmp_path: Path) -> None:
    data = (
        b"image,caption\n"
        b'a.jpg,"A dog, running ."\n'
        b"a.jpg,A dog sits .\n"
        b"b.jpg,too,many,fields\n"  # 4
        b"b.jpg,A cat .\n"
        b"b.jpg,A cat .\n"  # 6: duplicate row
        b"sub\\c.jpg,windows separator\n"
    )
    entries, fmt, report = _parse(tmp_path, "captions.txt", data)
    assert fmt == "csv"
    grouped = group_captions(entries, report)
    assert grouped == {
        "a.jpg": ["A dog, running .", "A dog sits ."],
        "b.jpg": ["A cat ."],
        "sub/c.jpg": ["windows separator"],
    }
    assert _kinds(report) == [(4, "malformed_line"), (6, "duplicate_caption")]


def test_csv_without_header_and_with_extra_columns(tmp_path: Path) -> None:
    entries, _, report = _parse(tmp_path, "caps.csv", b"a.jpg,first\nb.jpg,second\n")
    assert [(e.image, e.caption) for e in entries] == [("a.jpg", "first"), ("b.jpg", "second")]
    entries, _, report = _parse(tmp_path, "caps2.csv", b"caption,split,image\nhello,train,x.png\n")
    assert [(e.image, e.caption) for e in entries] == [("x.png", "hello")] and not report.problems


def test_jsonl_good_and_malformed(tmp_path: Path) -> None:
    data = (
        b'{"image": "a.jpg", "captions": ["one", "two"]}\n'
        b'{"image": "b.jpg", "caption": "single"}\n'
        b"{not json}\n"  # 3
        b'["a list"]\n'  # 4
        b'{"image": 5, "captions": ["x"]}\n'  # 5
        b'{"image": "c.jpg", "captions": "not a list"}\n'  # 6
        b'{"image": "c.jpg", "captions": ["ok", 3]}\n'  # 7
        b'{"image": "../../outside.jpg", "captions": ["x"]}\n'  # 8
        b'{"image": "d.jpg"}\n'  # 9
    )
    entries, fmt, report = _parse(tmp_path, "caps.jsonl", data)
    assert fmt == "jsonl"
    assert [(e.image, e.caption) for e in entries] == [
        ("a.jpg", "one"),
        ("a.jpg", "two"),
        ("b.jpg", "single"),
    ]
    assert _kinds(report) == [
        (3, "malformed_line"),
        (4, "malformed_line"),
        (5, "malformed_line"),
        (6, "malformed_line"),
        (7, "malformed_line"),
        (8, "path_escape"),
        (9, "malformed_line"),
    ]


def test_format_detection(tmp_path: Path) -> None:
    cases = {
        "x.txt": (b"a.jpg#0\tcap\n", "token"),
        "captions.txt": (b"image,caption\na.jpg,cap\n", "csv"),
        "x.data": (b'{"image": "a", "captions": []}\n', "jsonl"),
        "x.jsonl": (b"", "jsonl"),
    }
    for name, (data, fmt) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert detect_format(path, read_lines(path, name, ValidationReport())) == fmt, name


def test_unusable_or_missing_files_are_fatal(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read captions file"):
        parse_captions(tmp_path / "nope.txt", ValidationReport())
    path = tmp_path / "junk.txt"
    path.write_bytes(b"no tabs or commas here\n\xff\xfe\n")
    with pytest.raises(DatasetError, match="no usable caption lines"):
        parse_captions(path, ValidationReport())


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("a.jpg", "a.jpg"),
        ("./sub//b.png", "sub/b.png"),
        ("sub/../c.jpg", "c.jpg"),
        ("../c.jpg", None),
        ("sub/../../c.jpg", None),
        ("/etc/passwd", None),
        ("C:\\pics\\a.jpg", None),
        ("..\\up.jpg", None),
    ],
)
def test_normalize_reference_rejects_escapes(ref: str, expected: str | None) -> None:
    assert normalize_reference(ref) == expected
