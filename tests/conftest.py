"""Shared fixtures. Tests never touch the network and never write into the repository's artifacts/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
FLICKR8K = Path(os.environ.get("CAPSEARCH_FLICKR8K", REPO.parent / "shared" / "data" / "flickr8k"))


@pytest.fixture(scope="session", autouse=True)
def _session_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point the artifacts root at a per-session temporary folder."""
    root = tmp_path_factory.mktemp("artifacts")
    os.environ["CAPSEARCH_ARTIFACTS"] = str(root)
    return root


@pytest.fixture
def artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty artifacts root for one test."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv("CAPSEARCH_ARTIFACTS", str(root))
    return root


@pytest.fixture(scope="session")
def flickr8k_dir() -> Path:
    """The real Flickr8k (read-only); tests that need it are skipped where it is absent."""
    if not (FLICKR8K / "images").is_dir():
        pytest.skip(f"real Flickr8k not found at {FLICKR8K} (set CAPSEARCH_FLICKR8K to its folder)")
    return FLICKR8K


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory: pytest.TempPathFactory):
    """A small prepared synthetic captioned-scenes dataset, shared by the whole session."""
    from core.data.prepare import prepare_synthetic

    return prepare_synthetic(n=120, seed=0, out=tmp_path_factory.mktemp("synthetic") / "synthetic-small")


@pytest.fixture(scope="session")
def tiny_model():
    """The built-in ``capsearch-tiny`` open_clip config, randomly initialised (seeded), on the CPU."""
    from core.models.loading import load_model

    return load_model("capsearch-tiny", device="cpu")
