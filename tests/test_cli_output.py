"""What the CLI writes to a terminal: untrusted text escaped in errors, plain progress lines off a terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("capsearch")


def capsearch(*argv: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CAPSEARCH_ARTIFACTS": str(root), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(CLI), *argv], env=env, capture_output=True, text=True, timeout=300)


def test_an_error_quoting_hostile_text_shows_it_escaped(tmp_path):
    hostile = "\x1b]0;owned\x07\x1b[2J[link=http://evil.example]x[/link]"
    proc = capsearch("search", "dog", "--dataset", hostile, root=tmp_path)
    assert proc.returncode == 2
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    assert "\\x1b]0;owned\\x07" in proc.stderr
    assert "[link=http://evil.example]" in proc.stderr  # shown literally, not turned into a link


def test_progress_is_printed_as_plain_lines_when_stderr_is_not_a_terminal(tmp_path):
    assert capsearch("prepare", "synthetic", "--n", "30", root=tmp_path).returncode == 0
    proc = capsearch("embed", "--dataset", "synthetic", "--model", "capsearch-tiny", root=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("images", "captions", "embed"))]
    assert lines, proc.stderr
    assert any("/" in line for line in lines)  # done/total
    assert "\x1b" not in proc.stderr


def test_a_hostile_query_and_captions_are_escaped_in_the_search_table(tmp_path):
    assert capsearch("prepare", "synthetic", "--n", "30", root=tmp_path).returncode == 0
    query = "\x1b[2J\x1b]0;owned\x07 [link=http://evil.example]red[/link] circle"
    proc = capsearch("search", query, "--dataset", "synthetic", "--model", "capsearch-tiny", root=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    assert "\\x1b[2J" in proc.stdout.replace("\n", "")
