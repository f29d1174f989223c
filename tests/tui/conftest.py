"""Fixtures for the terminal app's tests: the tiny model over the small synthetic dataset, opened once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from library_fixture import PhotoLibrary, photo_library_in

from tui.app import CapsearchApp
from tui.session import Source


def pytest_configure(config: pytest.Config) -> None:
    # textual-image 0.12 calls Pillow's deprecated Image.getdata on every half-cell render
    config.addinivalue_line("filterwarnings", "ignore:Image.Image.getdata is deprecated:DeprecationWarning")


@pytest.fixture(scope="session")
def source(synthetic_small) -> Source:
    return Source(dataset=str(synthetic_small.dir), model="capsearch-tiny", split="test", index="exact")


@pytest.fixture(scope="session")
def retriever(source: Source):
    """A core Retriever over the synthetic test split with capsearch-tiny (opened once per session)."""
    from core.search.retriever import Retriever

    return Retriever.open(source.dataset, source.model, split=source.split, index=source.index)


@pytest.fixture
def make_app(source: Source, retriever) -> Callable[..., CapsearchApp]:
    """A factory for apps with the session's retriever injected (no model load in the app)."""

    def make(**overrides: Any) -> CapsearchApp:
        return CapsearchApp(
            source=overrides.pop("source", source), retriever=overrides.pop("retriever", retriever)
        )

    return make


@pytest.fixture(scope="module")
def photo_library(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> Iterator[PhotoLibrary]:
    """A small photo library (tests/tui/library_fixture.py), built once per test module."""
    yield from photo_library_in(tmp_path_factory.mktemp("photo-library"), tiny_model)
