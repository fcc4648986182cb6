"""Headless (Agg) plots written to PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def learning_curve(
    history: Any, path: str | Path, *, metric: str | None = None, title: str = ""
) -> Path:
    """Plot train/validation loss (and a metric on a second panel) per epoch."""
    path = Path(path)
    keys = history.keys
    panels = [("loss", [k for k in ("loss", "val_loss") if k in keys])]
    if metric is not None:
        panels.append((metric, [k for k in (metric, f"val_{metric}") if k in keys]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    epochs = history["epoch"]
    for ax, (name, series) in zip(axes[0], panels):
        for k in series:
            ax.plot(epochs, history[k], marker="o", ms=3, label=k)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
