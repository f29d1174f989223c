"""A stand-in for a million real embeddings: a mixture fitted to the real ones, sampled at any size.

Fit (:func:`fit_mixture`): the real rows' mean and PCA basis (every component), k-means centroids, and for
each cluster the spread of its members around the centroid along every PCA component (a per-cluster
diagonal Gaussian in the PCA basis), shrunk towards the pooled within-cluster spread where a cluster has few
members. Sample (:func:`sample_rows`): a cluster by its share of the real rows, its centroid plus Gaussian
noise with that cluster's spread in the PCA basis, rotated back, then L2-normalised like the real rows.

Pure numpy (k-means from FAISS), so the test can fit and sample tiny data in well under a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import faiss
import numpy as np


@dataclass(frozen=True)
class Mixture:
    """A fitted stand-in: centroids [k, d], weights [k], basis [d, d] (rows: PCA axes), spread [k, d] (std
    of each cluster along each PCA axis), and whether samples are L2-normalised."""

    centroids: np.ndarray
    weights: np.ndarray
    basis: np.ndarray
    spread: np.ndarray
    normalise: bool

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def summary(self) -> dict[str, object]:
        sizes = self.weights
        return {
            "clusters": len(self.centroids),
            "dim": self.dim,
            "cluster_share_min_max": [float(sizes.min()), float(sizes.max())],
            "mean_spread_top10_axes": [round(float(v), 5) for v in self.spread.mean(axis=0)[:10]],
            "normalise": self.normalise,
        }


def pca_basis(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [d] and PCA axes [d, d] (rows, by decreasing variance) of ``x``."""
    mean = x.mean(axis=0, dtype=np.float64)
    cov = np.cov((x - mean).T.astype(np.float64))
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    return mean.astype(np.float32), vectors[:, order].T.astype(np.float32)


def fit_mixture(x: np.ndarray, clusters: int, seed: int = 0, prior: float = 8.0, iters: int = 20) -> Mixture:
    """Fit ``clusters`` k-means clusters to ``x`` [n, d] and each one's spread along the PCA axes.

    ``prior``: pseudo-count of the pooled within-cluster variance mixed into each cluster's own (a cluster
    of n members gets ``(n * own + prior * pooled) / (n + prior)``), so a small cluster is not a point.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if not 1 <= clusters <= n:
        raise ValueError(f"clusters must be in 1..{n} (the rows), not {clusters}")
    _, basis = pca_basis(x)
    km = faiss.Kmeans(d, clusters, niter=iters, seed=seed, verbose=False, max_points_per_centroid=n)
    km.train(x)
    _, assign = km.index.search(x, 1)
    assign = assign[:, 0]
    residual = (x - km.centroids[assign]) @ basis.T  # [n, d] in PCA coordinates
    counts = np.bincount(assign, minlength=clusters).astype(np.float64)
    sq = np.zeros((clusters, d), np.float64)
    np.add.at(sq, assign, residual.astype(np.float64) ** 2)
    pooled = sq.sum(axis=0) / n
    var = (sq + prior * pooled) / (counts[:, None] + prior)
    keep = counts > 0
    return Mixture(
        centroids=km.centroids[keep].astype(np.float32),
        weights=(counts[keep] / n).astype(np.float64),
        basis=basis,
        spread=np.sqrt(var[keep]).astype(np.float32),
        normalise=bool(np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-3)),
    )


def sample_rows(mix: Mixture, n: int, seed: int, chunk: int = 50_000) -> Iterator[np.ndarray]:
    """``n`` rows sampled from ``mix`` as float32 chunks of at most ``chunk`` rows (seeded, reproducible)."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        m = min(chunk, n - done)
        which = rng.choice(len(mix.weights), size=m, p=mix.weights)
        noise = rng.standard_normal((m, mix.dim), dtype=np.float32) * mix.spread[which]
        rows = mix.centroids[which] + noise @ mix.basis
        if mix.normalise:
            rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        yield rows.astype(np.float32, copy=False)
        done += m


def sample(mix: Mixture, n: int, seed: int) -> np.ndarray:
    """All ``n`` sampled rows in one array."""
    out = np.empty((n, mix.dim), np.float32)
    start = 0
    for rows in sample_rows(mix, n, seed):
        out[start : start + len(rows)] = rows
        start += len(rows)
    return out
