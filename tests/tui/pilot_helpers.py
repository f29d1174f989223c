"""Helpers for driving the app in pilot tests (imported by the tests of this folder)."""

from __future__ import annotations

import asyncio

from textual.pilot import Pilot
from textual.widgets import Input

from tui.app import CapsearchApp


async def settle(pilot: Pilot, timeout: float = 60.0) -> None:
    """Wait until debounce timers fired, every worker finished and the messages they posted were handled."""
    app = pilot.app
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        await pilot.pause(0.08)
        await app.workers.wait_for_complete()
        await pilot.pause()
        if not any(w.is_running for w in app.workers):
            return
    raise TimeoutError("workers still running")


async def type_text(pilot: Pilot, text: str) -> None:
    await pilot.press(*[{" ": "space"}.get(ch, ch) for ch in text])


def notifications(app: CapsearchApp) -> list[str]:
    """Every notification shown so far, as 'title: message'."""
    return [f"{n.title}: {n.message}" for n in app._notifications]


async def set_query(pilot: Pilot, text: str) -> None:
    """Put ``text`` in the focused input at once (one change, one search): faster than typing it."""
    focused = pilot.app.focused
    assert isinstance(focused, Input), focused
    focused.value = text
    await pilot.pause()
