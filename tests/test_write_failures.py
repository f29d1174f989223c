"""A full disk or an unwritable artifacts folder at any write: one clear error, nothing left behind that
a later run would trust (the rerun's output equals an uninterrupted run's), and never a traceback."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from crash_harness import COMMANDS, differences, digest

from core.cli import main as capsearch

FAULTS = [errno.ENOSPC, errno.EACCES, errno.EROFS]


def run_with_fault(argv: tuple[str, ...], at: int, code: int, monkeypatch: pytest.MonkeyPatch) -> int | None:
    """Run the CLI with the ``at``-th atomic rename failing with ``code``; None if it made fewer renames."""
    real_replace = os.replace
    calls = 0

    def failing_replace(src, dst, **kw):
        nonlocal calls
        calls += 1
        if calls == at:
            raise OSError(code, os.strerror(code))
        return real_replace(src, dst, **kw)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", failing_replace)
        status = capsearch(list(argv))
    return status if calls >= at else None


@pytest.mark.parametrize("name", ["prepare", "embed", "index"])
def test_every_write_site_fails_cleanly_and_the_rerun_is_whole(name, tmp_path, monkeypatch, capsys):
    command = COMMANDS[name]
    base = tmp_path / "base"
    base.mkdir()
    monkeypatch.setenv("CAPSEARCH_ARTIFACTS", str(base))
    for argv in command.before:
        assert capsearch(list(argv)) == 0
    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    monkeypatch.setenv("CAPSEARCH_ARTIFACTS", str(clean))
    assert capsearch(list(command.argv)) == 0
    expected = digest(clean)
    at, tried = 1, 0
    while True:
        root = tmp_path / f"fault{at}"
        shutil.copytree(base, root)
        monkeypatch.setenv("CAPSEARCH_ARTIFACTS", str(root))
        code = FAULTS[at % len(FAULTS)]
        capsys.readouterr()
        status = run_with_fault(command.argv, at, code, monkeypatch)
        if status is None:
            break
        err = capsys.readouterr().err
        assert status == 2, err
        assert "cannot write to" in err and os.strerror(code).lower().split()[0] in err.lower()
        assert "Traceback" not in err
        assert capsearch(list(command.argv)) == 0
        assert differences(expected, digest(root)) == []
        shutil.rmtree(root)
        at, tried = at + 1, tried + 1
    assert tried >= 2, f"{name} made only {tried} atomic writes"


def test_error_names_the_folder_and_the_way_out(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAPSEARCH_ARTIFACTS", str(tmp_path / "a"))
    status = run_with_fault(COMMANDS["prepare"].argv, 1, errno.ENOSPC, monkeypatch)
    err = capsys.readouterr().err
    assert status == 2
    assert str(tmp_path / "a") in err.replace("\n", "") and "CAPSEARCH_ARTIFACTS" in err
    assert not list(Path(tmp_path / "a").rglob(".*.tmp"))  # no temporary file left behind
