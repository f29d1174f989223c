"""Adding a folder to a library from the app (Ctrl+N in Search): the path is checked, the core's update
runs with its progress on a ProgressBar, results refresh when it is done, and Esc cancels it without
harm (a later update finishes the job)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from pilot_helpers import notifications, set_query, settle
from textual.widgets import Input, ProgressBar, Select

import core.library.update as library_update
from tui.app import CapsearchApp
from tui.library_session import LibraryRetriever
from tui.messages import TaskProgress
from tui.screens.add_folder import AddFolderDialog
from tui.session import Source
from tui.widgets.filter_row import FilterRow
from tui.widgets.results_list import ResultsList

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from library_helpers import key_of, library_of, make_folder  # noqa: E402

pytestmark = pytest.mark.asyncio


@pytest.fixture
def small_library(artifacts, tmp_path, tiny_model) -> LibraryRetriever:
    """Library ``mine`` with 3 photos, opened for searching (a fresh artifacts root per test)."""
    from core.search.library_search import LibrarySearcher

    make_folder(tmp_path / "old", 3)
    lib, _ = library_of("mine", [tmp_path / "old"], tiny_model)
    lib.close()
    return LibraryRetriever(LibrarySearcher.open("mine"))


async def open_dialog(pilot, folder: str, name: str | None = None) -> AddFolderDialog:
    await pilot.press("ctrl+n")
    await pilot.pause()
    dialog = pilot.app.screen
    assert isinstance(dialog, AddFolderDialog)
    dialog.query_one("#add-folder", Input).value = folder
    if name is not None:
        dialog.query_one("#add-name", Input).value = name
    return dialog


def shown_paths(app: CapsearchApp) -> set[Path]:
    return {Path(h.path) for h in app.screen.query_one(ResultsList).hits}


async def test_add_folder_shows_progress_and_refreshes_results(small_library, tmp_path, monkeypatch) -> None:
    new = [p.resolve() for p in make_folder(tmp_path / "new", 4, seed=1)]
    progress: list[tuple[str, int, int | None, float | None]] = []
    original = AddFolderDialog.on_task_progress

    def record(self: AddFolderDialog, message: TaskProgress) -> None:
        original(self, message)
        bar = self.query_one(ProgressBar)
        progress.append((message.stage, message.done, message.total, bar.progress))

    monkeypatch.setattr(AddFolderDialog, "on_task_progress", record)
    app = CapsearchApp(Source(library="mine"), retriever=small_library)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await set_query(pilot, "a photo")
        await settle(pilot)
        assert len(shown_paths(app)) == 3
        dialog = await open_dialog(pilot, str(tmp_path / "new"))
        assert dialog.query_one("#add-name", Input).value == "mine"
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(app.screen, AddFolderDialog)
        assert app.retriever is not small_library and app.retriever.size == 7
        assert set(new) <= shown_paths(app) and len(shown_paths(app)) == 7  # the query ran again
        assert ("embed images", 4, 4, 4.0) in progress
        assert any(stage == "scan files" for stage, *_ in progress)
        (note,) = notifications(app)
        assert note.startswith("Library updated: library mine: 7 files, 4 new, 0 changed, 0 gone, 4 embedded")


async def test_bad_folders_and_names_are_refused_in_the_dialog(small_library, tmp_path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    cases = [
        ("", None, "type the folder of photos to add"),
        (str(tmp_path / "nowhere"), None, "no such folder"),
        (str(a_file), None, "is a file, not a folder"),
        (str(tmp_path), "no spaces", "invalid library name 'no spaces'"),
    ]
    app = CapsearchApp(Source(library="mine"), retriever=small_library)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        dialog = await open_dialog(pilot, "")
        for folder, name, message in cases:
            dialog.query_one("#add-folder", Input).value = folder
            dialog.query_one("#add-name", Input).value = name or "mine"
            dialog.query_one("#add-folder", Input).focus()
            await pilot.press("enter")
            await settle(pilot)
            assert app.screen is dialog and not dialog.running
            error = dialog.query_one("#add-error")
            assert message in str(error.render()) and error.has_class("-error")
        assert notifications(app) == [] and app.retriever is small_library
        await pilot.press("escape")
        assert not isinstance(app.screen, AddFolderDialog)


async def test_escape_cancels_the_update_and_a_rerun_finishes_it(
    small_library, tmp_path, tiny_model, monkeypatch
) -> None:
    make_folder(tmp_path / "new", 4, seed=2)
    started, proceed = threading.Event(), threading.Event()
    real_embed = library_update.embed_missing

    def embed_after_the_test_cancels(*args, **kwargs):
        started.set()
        proceed.wait(30)
        return real_embed(*args, **kwargs)

    monkeypatch.setattr(library_update, "embed_missing", embed_after_the_test_cancels)
    app = CapsearchApp(Source(library="mine"), retriever=small_library)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        dialog = await open_dialog(pilot, str(tmp_path / "new"))
        await pilot.press("enter")
        while not started.is_set():
            await pilot.pause(0.05)
        assert dialog.running and dialog.query_one("#add-progress-row").has_class("-running")
        await pilot.press("escape")
        assert "cancelling" in str(dialog.query_one("#add-error").render())
        proceed.set()
        await settle(pilot)
        assert not isinstance(app.screen, AddFolderDialog)
        assert notifications(app) == ["Library update: Cancelled; finished work was kept."]
        assert app.retriever is small_library  # the search keeps what was there

    from core.library.library import Library

    monkeypatch.setattr(library_update, "embed_missing", real_embed)
    with Library.open("mine") as lib:
        assert lib.catalogue.counts(key_of(tiny_model).key)["files"] == 7  # scanned before the cancel
        assert len(lib.catalogue.missing_vectors(key_of(tiny_model).key)) == 4
        stats = library_update.update(lib, tiny_model, key_of(tiny_model))
    assert (stats.embedded, stats.new) == (4, 0)
    from core.search.library_search import LibrarySearcher

    searcher = LibrarySearcher.open("mine")
    assert searcher.size == 7
    searcher.close()


async def test_adding_a_folder_from_a_dataset_makes_and_opens_a_library(
    make_app, artifacts, tmp_path
) -> None:
    make_folder(tmp_path / "pics", 4)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert not app.screen.query_one(FilterRow).display
        dialog = await open_dialog(pilot, str(tmp_path / "pics"))
        assert dialog.query_one("#add-name", Input).value == "photos"
        await pilot.press("enter")  # no model chosen, none trained: explained in the dialog
        await settle(pilot)
        assert app.screen is dialog and not dialog.running
        error = str(dialog.query_one("#add-error").render())
        assert "no trained capsearch-lit-lite2 checkpoint" in error and "choose a Model above" in error
        assert notifications(app)[-1].startswith("Could not add the folder: no --model given")
        dialog.query_one("#add-model", Select).value = "capsearch-tiny"
        dialog.query_one("#add-folder", Input).focus()
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(app.screen, AddFolderDialog)
        assert isinstance(app.retriever, LibraryRetriever) and app.retriever.size == 4
        assert app.retriever.model_id.startswith("capsearch-tiny")
        assert app.source.library == "photos"
        assert app.screen.query_one(FilterRow).display
