"""The million-vector stand-in (scripts/standin_mixture.py): samples follow the mixture fitted to the source."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "standin_mixture.py"


@pytest.fixture(scope="module")
def standin():
    spec = importlib.util.spec_from_file_location("standin_mixture", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _source(n: int = 3000, d: int = 16, seed: int = 0) -> np.ndarray:
    """Four anisotropic blobs of unit vectors, of unequal sizes: structure the fit has to recover."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4, d)) * 2.0
    scales = rng.uniform(0.05, 0.6, size=(4, d))
    which = rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1])
    x = centres[which] + rng.standard_normal((n, d)) * scales[which]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_samples_match_the_fitted_source(standin) -> None:
    x = _source()
    mix = standin.fit_mixture(x, clusters=4, seed=0, prior=1.0)
    y = standin.sample(mix, 6000, seed=1)
    assert y.shape == (6000, 16) and y.dtype == np.float32
    assert mix.normalise and np.allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    assert np.abs(y.mean(axis=0) - x.mean(axis=0)).max() < 0.03
    cx, cy = np.cov(x.T), np.cov(y.T)
    assert np.abs(cy - cx).max() < 0.1 * np.abs(cx).max()
    # the spectrum of the source: variance along its PCA axes, not just the total
    _, basis = standin.pca_basis(x)
    vx, vy = ((x - x.mean(0)) @ basis.T).var(0), ((y - y.mean(0)) @ basis.T).var(0)
    assert np.allclose(vy, vx, rtol=0.25, atol=2e-3)
    # cluster shares: every sample's nearest centroid falls in proportion to the fitted weights
    nearest = np.argmin(((y[:, None, :] - mix.centroids[None]) ** 2).sum(-1), axis=1)
    shares = np.bincount(nearest, minlength=len(mix.weights)) / len(y)
    assert np.abs(shares - mix.weights).max() < 0.03
    assert sorted(np.round(mix.weights, 1).tolist()) == [0.1, 0.2, 0.3, 0.4]


def test_sampling_is_seeded_and_chunked(standin) -> None:
    mix = standin.fit_mixture(_source(500), clusters=3, seed=0)
    a = standin.sample(mix, 1000, seed=7)
    chunks = list(standin.sample_rows(mix, 1000, seed=7, chunk=300))
    assert [len(c) for c in chunks] == [300, 300, 300, 100]
    assert np.array_equal(standin.sample(mix, 1000, seed=7), a)
    assert not np.array_equal(standin.sample(mix, 1000, seed=8), a)


def test_bad_cluster_count_is_refused(standin) -> None:
    with pytest.raises(ValueError, match="clusters must be in 1..10"):
        standin.fit_mixture(_source(10), clusters=11)
