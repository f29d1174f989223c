"""Acting on the selected search result: open it in the system viewer, copy its path, open its folder.

The launcher is replaced at the boundary (tui.system_open.launch / start_file), so no window opens; what
is checked is the argument list it would run (no shell) and the notifications the user sees.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pilot_helpers import notifications, set_query, settle

import tui.system_open as system_open
from core.errors import CapsearchError
from tui.widgets.results_list import ResultsList

OPENER = "/usr/bin/xdg-open"


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The argument lists the app launches (a Linux machine with xdg-open installed)."""
    calls: list[list[str]] = []
    monkeypatch.setattr(system_open.sys, "platform", "linux")
    monkeypatch.setattr(system_open.shutil, "which", lambda name: OPENER if name == "xdg-open" else None)
    monkeypatch.setattr(system_open, "launch", calls.append)
    return calls


async def searched(pilot) -> Path:
    await set_query(pilot, "a dog on the grass")
    await settle(pilot)
    hit = pilot.app.screen.query_one(ResultsList).highlighted
    assert hit is not None
    return Path(hit.path)


@pytest.mark.asyncio
async def test_view_and_reveal_launch_the_system_viewer(make_app, launched) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        path = await searched(pilot)
        await pilot.press("ctrl+s")
        await pilot.press("down")  # to the results: the actions follow the selection
        await pilot.press("down")
        second = Path(app.screen.query_one(ResultsList).highlighted.path)
        assert second != path
        await pilot.press("ctrl+b")
        assert launched == [[OPENER, str(path)], [OPENER, str(second.parent)]]
        notes = notifications(app)
        assert notes == [f"Opened the image: {path}", f"Opened the folder: {second.parent}"]


@pytest.mark.asyncio
async def test_copy_path_puts_it_on_the_clipboard(make_app, launched) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        path = await searched(pilot)
        await pilot.press("ctrl+y")
        assert app.clipboard == str(path)
        assert notifications(app) == [f"Copied the path: {path}"]
        assert launched == []


@pytest.mark.asyncio
async def test_no_viewer_and_no_selection_are_explained(make_app, launched, monkeypatch) -> None:
    monkeypatch.setattr(system_open.shutil, "which", lambda name: None)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+s")  # nothing searched yet
        assert "Select a result first" in notifications(app)[-1]
        await searched(pilot)
        await pilot.press("ctrl+s")
        note = notifications(app)[-1]
        assert note.startswith("Could not open the image: no system viewer: xdg-open was not found")
        assert "Next: install xdg-utils" in note
        assert launched == []


def test_the_command_per_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_open.shutil, "which", lambda name: f"/bin/{name}")
    target = tmp_path / "a photo; rm -rf ~.jpg"
    target.write_bytes(b"x")
    assert system_open.viewer_command(target, "linux") == ["/bin/xdg-open", str(target)]
    assert system_open.viewer_command(target, "darwin") == ["/bin/open", str(target)]
    assert system_open.viewer_command(target, "win32") is None
    started: list[Path] = []
    monkeypatch.setattr(system_open, "start_file", started.append)
    system_open.open_with_system(target, "win32")
    assert started == [target]


def test_launch_runs_an_argument_list_detached_without_a_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[object, dict]] = []
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kw: seen.append((args, kw)))
    system_open.launch(["/bin/xdg-open", "/photos/$(touch x).jpg"])
    ((args, kw),) = seen
    assert args == ["/bin/xdg-open", "/photos/$(touch x).jpg"]
    assert not kw.get("shell") and kw["start_new_session"] is True
    assert kw["stdin"] == kw["stdout"] == kw["stderr"] == subprocess.DEVNULL


def test_a_gone_file_or_a_failing_viewer_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_open.shutil, "which", lambda name: f"/bin/{name}")
    with pytest.raises(CapsearchError, match="is gone"):
        system_open.open_with_system(tmp_path / "moved.jpg", "linux")

    def refuse(args: list[str]) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(system_open, "launch", refuse)
    with pytest.raises(
        system_open.NoViewerError, match="could not start the system viewer: Permission denied"
    ):
        system_open.open_with_system(tmp_path, "linux")


@pytest.mark.asyncio
async def test_hostile_file_names_are_shown_escaped(make_app, tmp_path, launched, monkeypatch) -> None:
    """A file name with a terminal escape is notified escaped; the viewer still gets the real path, and the
    clipboard bash quoting of it (raw, a paste could end a terminal's bracketed paste and run the rest)."""
    evil = tmp_path / "\x1b]0;pwned\x07a0.jpg"
    evil.write_bytes(b"not really a jpeg")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        monkeypatch.setattr(app.screen, "_selected_path", lambda: evil)
        await pilot.press("ctrl+s", "ctrl+y")
        assert launched == [[OPENER, str(evil)]]
        assert app.clipboard == f"$'{tmp_path}/\\x1b]0;pwned\\x07a0.jpg'"
        for note in notifications(app):
            assert "\x1b" not in note and "\\x1b]0;pwned\\x07a0.jpg" in note


@pytest.mark.asyncio
async def test_a_name_that_is_not_text_is_copied_as_shell_quoting(make_app, launched, monkeypatch) -> None:
    """A photo named in Latin-1 (lone surrogates in Python) cannot go on the clipboard as text, and Textual's
    copy would fail to encode it: bash's $'...' quoting names the file exactly."""
    odd = Path("/photos/caf\udce9.jpg")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        monkeypatch.setattr(app.screen, "_selected_path", lambda: odd)
        await pilot.press("ctrl+y")
        assert app.clipboard == "$'/photos/caf\\xe9.jpg'"
        title = "Copied the path (as a shell $'…' string: the name is not plain text)"
        assert notifications(app) == [f"{title}: $'/photos/caf\\xe9.jpg'"]
