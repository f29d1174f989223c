"""Fixtures of the service tests: one engine over the tiny synthetic dataset, loaded once per session,
and apps (with different security settings) around it, reached through FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from core.serve.app import create_app
from core.serve.engine import Engine
from core.serve.metrics import Metrics
from core.serve.settings import Settings


@pytest.fixture(scope="session")
def engine(synthetic_small, tiny_model) -> Engine:
    settings = Settings(dataset=str(synthetic_small.dir), reload_check_s=0)
    engine = Engine(settings, Metrics(), (synthetic_small, tiny_model))
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
