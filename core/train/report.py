"""Plots of training runs: loss and validation recall per epoch, and the WiSE-FT alpha curve."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from core.atomic import atomic_path


def _figure() -> ModuleType:
    """The matplotlib.pyplot module, on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(runs: dict[str, list[dict[str, Any]]], target: Path, title: str) -> Path:
    """One figure: train loss (left) and val mean recall / t2i R@10 (right) per epoch for each run."""
    plt = _figure()
    fig, (ax_loss, ax_rec) = plt.subplots(1, 2, figsize=(11, 4))
    for label, curve in runs.items():
        epochs = [row["epoch"] for row in curve]
        ax_loss.plot(epochs, [row["train_loss"] for row in curve], marker="o", label=label)
        ax_rec.plot(epochs, [row["mean_recall"] for row in curve], marker="o", label=f"{label} mean R@K")
        ax_rec.plot(epochs, [row.get("t2i_R@10") for row in curve], linestyle="--", label=f"{label} t2i R@10")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="training loss")
    ax_rec.set(xlabel="epoch", ylabel="val recall (%)", title="validation recall")
    for ax in (ax_loss, ax_rec):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return target


def plot_alpha(curve: list[dict[str, Any]], target: Path, title: str) -> Path:
    """The WiSE-FT sweep: val mean recall against the interpolation weight alpha."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["alpha"] for r in curve], [r["mean_recall"] for r in curve], marker="o")
    best = max(curve, key=lambda r: r["mean_recall"])
    ax.axvline(best["alpha"], color="grey", linestyle=":", label=f"best alpha = {best['alpha']:g}")
    ax.set(xlabel="alpha (0 = start, 1 = fine-tuned)", ylabel="val mean recall (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return target
