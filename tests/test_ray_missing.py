"""Without Ray installed, every Ray code path says so and how to install it (Ray hidden from imports)."""

from __future__ import annotations

import sys

import pytest

from core.embed.ray_engine import ModelSpec, RayMissingError, import_ray, ray_session, ray_split_embeddings

MESSAGE = r"Ray is not installed: pip install 'capsearch\[ray\]'"


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError


def test_every_ray_entry_point_says_ray_is_missing(no_ray: None, tiny_model, synthetic_small) -> None:
    with pytest.raises(RayMissingError, match=MESSAGE):
        import_ray()
    with pytest.raises(RayMissingError, match=MESSAGE), ray_session("auto"):
        pass
    spec = ModelSpec.of("capsearch-tiny", None, tiny_model)
    with pytest.raises(RayMissingError, match=MESSAGE):
        ray_split_embeddings(tiny_model, spec, synthetic_small, "test")


def test_cli_says_ray_is_missing_before_any_work(
    no_ray: None, artifacts, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.cli import build_parser
    from core.cli.console import main

    argv = ["embed", "--engine", "ray", "--dataset", "not-prepared", "--model", "capsearch-tiny"]
    assert main(build_parser(), argv) == 2
    err = capsys.readouterr().err
    assert "Ray is not installed: pip install 'capsearch[ray]'" in err and "not-prepared" not in err
