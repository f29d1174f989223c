"""SIGKILL at seeded random points during prepare, embed, index and train: the next run completes and
its output equals an uninterrupted run's (bit-identical data files; fp32, fixed batch composition and a
fixed step count for training). Bounded for CI: 5 points per command. ``serve``: killed while loading and
under load, it restarts ready with the same answers."""

from __future__ import annotations

import pytest
from crash_harness import COMMANDS, check_command, check_serve

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_killed_command_resumes_to_the_same_output(name, tmp_path):
    points = check_command(COMMANDS[name], tmp_path, points=5, seed=1)
    bad = [p for p in points if not p.consistent]
    assert not bad, "\n".join(
        f"kill after {p.after_writes} files + {p.jitter_s}s: {p.differences[:5]}" for p in bad
    )
    assert sum(p.killed_mid_run for p in points) >= 4  # the kills land while the command runs


def test_a_killed_server_restarts_ready_with_the_same_answers(tmp_path):
    """``capsearch serve`` killed while it builds its index and again under load comes back with a clean
    start's answers and files."""
    problems = check_serve(tmp_path, seed=1)
    assert not problems, problems
