"""Headless (Agg) plots written to PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = {
    "loss": "loss (objective)",
    "accuracy": "accuracy",
    "nmse": "normalised MSE (MSE / variance)",
    "mse": "mean squared error",
    "bpc": "bits per character",
}


def _label(key: str) -> str:
    """A readable axis label for a history key (``val_accuracy`` -> ``accuracy``)."""
    return LABELS.get(key, key.replace("_", " "))


def learning_curve(
    history: Any,
    path: str | Path,
    *,
    metric: str | None = None,
    title: str = "",
    chance: float | None = None,
) -> Path:
    """Plot training and validation loss (and ``metric`` on a second panel) per epoch.

    Epochs are whole-number ticks; ``chance`` (the metric's trivial baseline, e.g. the majority
    class's share) is drawn as a dashed line on the metric panel.
    """
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    keys = history.keys
    panels = [("loss", [k for k in ("loss", "val_loss") if k in keys])]
    if metric is not None:
        panels.append((metric, [k for k in (metric, f"val_{metric}") if k in keys]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    epochs = history["epoch"]
    for ax, (name, series) in zip(axes[0], panels):
        for k in series:
            ax.plot(epochs, history[k], marker="o", ms=3,
                    label="validation" if k.startswith("val_") else "training")  # fmt: skip
        if name == metric and chance is not None:
            ax.axhline(chance, color="grey", ls="--", lw=1, label=f"chance ({chance:.3g})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(_label(name))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_matrix(counts: Any, path: str | Path, *, title: str = "") -> Path:
    """Plot a confusion matrix ``counts[true, predicted]`` as row-normalised shares."""
    import numpy as np

    path = Path(path)
    counts = np.asarray(counts, dtype=float)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    C = counts.shape[0]
    size = min(12.0, 2.5 + 0.35 * C)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(shares, vmin=0, vmax=1, cmap="Blues")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    step = max(1, C // 20)
    ax.set_xticks(range(0, C, step))
    ax.set_yticks(range(0, C, step))
    if C <= 12:
        for i in range(C):
            for j in range(C):
                if counts[i, j]:
                    color = "white" if shares[i, j] > 0.5 else "black"
                    ax.text(
                        j,
                        i,
                        f"{int(counts[i, j])}",
                        ha="center",
                        va="center",
                        color=color,
                        fontsize=8,
                    )
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
