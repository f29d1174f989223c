"""Two processes running the same writing command on one artifacts root: both succeed (the second waits
for the first's folder lock) and the output equals one run's."""

from __future__ import annotations

import pytest
from crash_harness import COMMANDS, check_concurrent

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_two_writers_at_once_leave_one_runs_output(name, tmp_path):
    assert check_concurrent(COMMANDS[name], tmp_path) == []
