"""Fixtures of the service tests: one engine over the tiny synthetic dataset, loaded once per session,
and apps (with different security settings) around it, reached through FastAPI's TestClient; and an engine
over a small photo library made by the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from library_helpers import make_folder, write_photo

from core.cli import main
from core.serve.app import create_app
from core.serve.dataset import ServedDataset
from core.serve.engine import Engine
from core.serve.library import ServedLibrary
from core.serve.metrics import Metrics
from core.serve.settings import Settings


@pytest.fixture(scope="session")
def engine(synthetic_small, tiny_model) -> Engine:
    settings = Settings(dataset=str(synthetic_small.dir), reload_check_s=0)
    engine = Engine(settings, Metrics(), ServedDataset.opener(synthetic_small, tiny_model, "test", "auto"))
    engine.load()
    yield engine
    engine.close()


@pytest.fixture
def make_client(engine: Engine) -> Callable[..., TestClient]:
    """A client of an app around the shared engine, with settings overridden by keyword (the lifespan is
    not run, so the shared engine stays open)."""

    def make(**overrides: object) -> TestClient:
        settings = Settings(**{**engine.settings.__dict__, **overrides})
        return TestClient(create_app(settings, engine), raise_server_exceptions=False)

    return make


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


LIBRARY_MODEL = ["--model", "capsearch-tiny", "--device", "cpu", "--precision", "fp32"]


@pytest.fixture
def photos(tmp_path: Path, artifacts: Path) -> Path:
    """A library 'photos' of ten photos, one with an EXIF date and camera, made by the CLI."""
    folder = tmp_path / "photos"
    make_folder(folder, 9)
    write_photo(folder / "dated" / "a.jpg", 77, exif_date="2019:05:06 07:08:09", camera="Pixel 7")
    assert main(["library", "add", str(folder), *LIBRARY_MODEL]) == 0
    return folder


@pytest.fixture
def library_engine(photos: Path, tiny_model) -> Iterator[Engine]:
    engine = Engine(Settings(library="photos", reload_check_s=0), Metrics(), ServedLibrary.opener("photos"))
    engine.load()
    yield engine
    engine.close()
