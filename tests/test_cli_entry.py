"""The ``capsearch`` console script: version, top-level help, the default model and a light ``app`` path."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from core.cli import main
from core.cli.options import model_of
from core.errors import ModelError


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"capsearch {version('capsearch')}"


def test_the_top_level_help_names_no_development_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "capsearch prepare flickr8k" in out
    assert "../" not in out and "shared/data" not in out


def test_parsing_the_app_command_imports_no_other_command() -> None:
    code = (
        "import sys\n"
        "from core.cli import main\n"
        "try: main(['app', '--help'])\n"
        "except SystemExit: pass\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('core.cli.', 'numpy', 'faiss', 'torch', 'tui')))\n"
        "print(loaded, file=sys.stderr); sys.exit(0 if loaded == ['core.cli.app_cmd'] else 1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _args(dataset: str | None = None, model: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(dataset=dataset, model=model)


def test_without_a_model_the_cli_opens_the_newest_one_trained_on_the_dataset(
    artifacts: Path, synthetic_small
) -> None:
    folder = artifacts / "models" / "mine"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"dataset": synthetic_small.name}), encoding="utf-8")
    assert model_of(_args(str(synthetic_small.dir))) == str(folder)
    assert model_of(_args(str(synthetic_small.dir), "capsearch-tiny")) == "capsearch-tiny"
    with pytest.raises(ModelError, match="demo model has not been trained"):
        model_of(_args())


def test_commands_that_read_no_vectors_of_a_model_import_no_torch(artifacts: Path, tmp_path: Path) -> None:
    """Listing, status, housekeeping and a rescan with nothing new start without torch or open_clip."""
    photos = tmp_path / "photos"
    photos.mkdir()
    assert main(["library", "add", str(photos), "--model", "capsearch-tiny", "--device", "cpu"]) == 0
    for command in (["--version"], ["datasets"], ["where"], ["library", "list"], ["library", "status"],
                    ["library", "update"], ["clean"]):  # fmt: skip
        code = (
            "import sys\n"
            "from core.cli import main\n"
            f"try: rc = main({command!r})\n"
            "except SystemExit as exc: rc = exc.code\n"
            "heavy = sorted(m for m in ('torch', 'open_clip', 'transformers') if m in sys.modules)\n"
            "print(rc, heavy, file=sys.stderr); sys.exit(0 if rc == 0 and not heavy else 1)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
