"""The ``capsearch app`` command and the import-time promise behind a fast first paint."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.cli import main
from core.cli.app_cmd import PREVIEW_CHOICES


def test_importing_the_app_loads_no_heavy_core_module() -> None:
    code = (
        "import sys, tui.app\n"
        "heavy = sorted(m for m in ('torch', 'open_clip', 'faiss', 'core.search.retriever') if m in sys.modules)\n"
        "print(heavy); sys.exit(1 if heavy else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_preview_option_offers_every_preview_mode() -> None:
    from tui.widgets.image_preview import PREVIEW_MODES

    assert ("auto", *PREVIEW_MODES) == PREVIEW_CHOICES


@pytest.mark.parametrize(
    ("mode", "widget"),
    [
        ("kitty", "TGPImage"),
        ("sixel", "SixelPreviewImage"),
        ("halfcell", "HalfcellImage"),
        ("unicode", "UnicodeImage"),
    ],
)
def test_preview_mode_forces_the_protocol(mode: str, widget: str) -> None:
    code = "from tui.widgets.image_preview import ImageWidget as w\nprint(w.__module__, w.__name__)\n"
    env = {**os.environ, "CAPSEARCH_PREVIEW": mode}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    module = "tui.widgets.image_preview" if mode == "sixel" else "textual_image.widget"
    assert proc.stdout.split() == [module, widget], proc.stderr


def test_app_help_shows_flickr8k_a_photo_folder_and_pretrained_weights(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["app", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for needle in ("--dataset flickr8k", "prepare folder", "--pretrained openai", "--split", "Ctrl+O"):
        assert needle in out, needle


def test_app_rejects_an_unknown_split(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["app", "--split", "holdout"])
    assert exc.value.code == 2
    assert "holdout" in capsys.readouterr().err


def test_the_full_cli_lists_the_app_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "app" in capsys.readouterr().out


def test_the_app_lets_its_worker_threads_reuse_freed_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import tui.app

    calls: list[None] = []
    monkeypatch.setattr(tui.app, "share_one_arena", lambda: calls.append(None))
    tui.app.CapsearchApp()
    assert len(calls) == 1  # before any worker thread starts (core.embed.heap)
