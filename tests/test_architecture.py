"""The core is a library any client can use: it must never depend on the terminal app.

The import-linter contracts in pyproject.toml are the rules (core's layers; core free of the app, with no
exception: ``capsearch app`` finds the app through its entry point); these tests run them.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from core.cli import app_cmd, main

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"
FORBIDDEN = ("textual", "textual_image", "textual_plotext", "tui")


def test_the_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint_imports), "--no-cache"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_core_imports_the_app_nowhere_and_finds_it_by_its_entry_point() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    assert [c.get("ignore_imports", []) for c in contracts if c["type"] == "forbidden"] == [[]]
    assert config["project"]["entry-points"][app_cmd.APP_ENTRY_POINTS] == {"textual": "tui.launch:run_app"}
    from tui.launch import run_app

    assert app_cmd.launcher() is run_app


def test_without_an_app_capsearch_app_says_so(monkeypatch, capfd) -> None:
    monkeypatch.setattr(app_cmd, "entry_points", lambda group: [])
    assert main(["app"]) == 2
    out, err = capfd.readouterr()
    err += out
    assert "no terminal app is installed" in err and "pip install -e ." in err


def test_importing_every_core_module_loads_no_textual() -> None:
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in CORE.rglob("*.py")
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
