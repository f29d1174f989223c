"""``pip install .`` ships what the installed ``capsearch`` reads at run time: model configs, the stylesheet."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_the_model_configs_the_kernel_source_the_stylesheets_the_search_page_and_the_console_script(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"  # a copy, so that the build leaves nothing in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("core", "tui"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
        + ["-w", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("capsearch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"core/models/configs/{p.name}" for p in (ROOT / "core/models/configs").glob("*.json")}
    assert configs and configs <= names
    assert "core/embed/amx_attention.c" in names  # compiled where it runs (core.embed.amx_attention)
    assert "tui/app.tcss" in names
    assert {f"core/serve/web/{n}" for n in ("index.html", "app.js", "app.css")} <= names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "capsearch = core.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
