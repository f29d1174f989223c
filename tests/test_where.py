"""The artifacts root: $CAPSEARCH_ARTIFACTS, else the checkout's artifacts/, else the user data folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli import main
from core.paths import ENV_VAR, artifacts_home, artifacts_root, project_checkout

PYPROJECT = '[project]\nname = "capsearch"\nversion = "0"\n'


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No $CAPSEARCH_ARTIFACTS; the platform's user data folder under tmp_path (XDG on Linux)."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path


def test_the_environment_variable_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "pyproject.toml").write_text(PYPROJECT)
    monkeypatch.chdir(checkout)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "mine"))
    home = artifacts_home()
    assert (home.root, home.reason) == ((tmp_path / "mine").resolve(), "env")


def test_inside_a_checkout_its_artifacts_folder_from_any_subfolder(
    no_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = no_env / "checkout"
    deep = checkout / "core" / "deeper"
    deep.mkdir(parents=True)
    (checkout / "pyproject.toml").write_text(PYPROJECT)
    monkeypatch.chdir(deep)
    home = artifacts_home()
    assert (home.root, home.reason) == (checkout.resolve() / "artifacts", "checkout")
    assert project_checkout() == checkout.resolve()


def test_elsewhere_the_user_data_folder(no_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = no_env / "other-project"
    other.mkdir()
    (other / "pyproject.toml").write_text('[project]\nname = "not-capsearch"\n')
    (other / "artifacts").mkdir()  # an artifacts/ folder alone is no marker
    (no_env / "pyproject.toml").write_text("this is [not toml")  # nor is a broken pyproject
    monkeypatch.chdir(other)
    home = artifacts_home()
    assert (home.root, home.reason) == ((no_env / "xdg" / "capsearch").resolve(), "user-data")
    assert artifacts_root() == home.root


def test_where_prints_the_root_the_reason_and_the_sizes(
    artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (artifacts / "models" / "m").mkdir(parents=True)
    (artifacts / "models" / "m" / "weights.bin").write_bytes(b"x" * 3000)
    (artifacts / "datasets").mkdir()
    (artifacts / "datasets" / "a.jsonl").write_bytes(b"y" * 10)
    assert main(["where", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["root"] == str(artifacts.resolve()) and out["reason"] == "env"
    assert out["parts"] == {"datasets": {"bytes": 10, "files": 1}, "models": {"bytes": 3000, "files": 1}}
    assert main(["where"]) == 0
    text = capsys.readouterr().out
    assert str(artifacts.resolve()) in text and "CAPSEARCH_ARTIFACTS is set" in text and "2.9 KiB" in text
