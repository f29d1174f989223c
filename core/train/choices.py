"""The names training accepts for its loss and freezing policy, without torch (the CLI lists them in --help)."""

from __future__ import annotations

from typing import Literal, get_args

Loss = Literal["clip", "margin"]
LOSSES: tuple[str, ...] = get_args(Loss)
POLICIES = ("full", "last:N", "proj-norm", "proj", "frozen-text")
