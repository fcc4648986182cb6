"""Plots of a rule comparison: learning curves overlaid, gradient-alignment bars, cost scaling.

Every function takes plain data (lists, dicts and numbers, as stored in ``chronograd
compare``'s and ``chronograd bench``'s JSON files), so a figure can be redrawn from a saved
result without re-running anything. Headless (Agg); each writes one PNG and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter

Records = Sequence[Mapping[str, float]]


def _save(fig: Any, path: str | Path, title: str) -> Path:
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def learning_curves(
    curves: Mapping[str, Records],
    path: str | Path,
    *,
    metric: str | None = None,
    chance: float | None = None,
    title: str = "",
) -> Path:
    """Overlay the learning curves of several runs (one colour per run).

    Args:
        curves: ``{label: history records}``; a record is ``{"epoch": e, "loss": ...,
            "val_loss": ..., "val_<metric>": ...}`` (``History.records``).
        metric: also plot ``val_<metric>`` (or ``<metric>`` without validation) per epoch.
            Each panel shows the validation value when the records have one, else the
            training value (the axis label says which).
        chance: draw the metric's chance level.
    """
    if not curves:
        raise ValueError("no curves to plot")
    panels = ["loss"] + ([metric] if metric else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        split = "training"
        for i, (label, records) in enumerate(curves.items()):
            key = f"val_{panel}" if any(f"val_{panel}" in r for r in records) else panel
            split = "validation" if key.startswith("val_") else split
            pts = [(r["epoch"], r[key]) for r in records if _finite(r.get(key))]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", ms=3, color=f"C{i}", label=label)
        if panel == metric and chance is not None:
            ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{split} {panel}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path, title)


def alignment_bars(
    alignment: Mapping[str, Mapping[str, Mapping[str, float | None] | None]],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Grouped bars of each rule's gradient alignment with BPTT, at initialisation and at the end.

    Args:
        alignment: ``{rule: {"init": {"cosine": c, "rel_error": r}, "end": {...}}}``; a
            missing or ``None`` value is drawn as no bar (relative errors beyond 10 are drawn at
            10 and labelled).
    """
    if not alignment:
        raise ValueError("no alignments to plot")
    rules = list(alignment)
    phases = ("init", "end")
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 1.3 * len(rules) + 4), 3.8))
    width = 0.38
    for ax, field, ylabel in zip(
        axes, ("cosine", "rel_error"), ("cosine with BPTT", "relative error vs BPTT")
    ):
        for j, phase in enumerate(phases):
            for i, rule in enumerate(rules):
                entry = alignment[rule].get(phase) or {}
                v = entry.get(field)
                if v is None or not _finite(v):
                    continue
                shown = min(float(v), 10.0) if field == "rel_error" else float(v)
                x = i + (j - 0.5) * width
                ax.bar(x, shown, width, color=f"C{j}", label=phase if i == 0 else None)
                if shown != v:
                    ax.annotate(f"{v:.3g}", (x, shown), ha="center", va="bottom", fontsize=7)
        if field == "cosine":
            ax.axhline(1.0, color="grey", ls=":", lw=1)
            ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.08)
        else:
            ax.set_ylim(0.0, max(0.1, 1.1 * ax.get_ylim()[1]))
        ax.set_xticks(range(len(rules)), rules, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
        handles, _labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=8)
    return _save(fig, path, title)


def scaling(
    panels: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    path: str | Path,
    *,
    xlabel: str,
    title: str = "",
) -> Path:
    """Log-log cost curves, one panel per measured quantity.

    Args:
        panels: ``{y label: {series label: [(x, y), ...]}}``, e.g. ``{"ms per step":
            {"bptt": [(100, 0.4), (1000, 0.41)], "forward": [...]}}``. Non-positive or
            non-finite points are left out (a log axis cannot show them).
        xlabel: the swept quantity (``"T (steps)"``, ``"N (hidden units)"``).
    """
    if not panels:
        raise ValueError("no panels to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.0), squeeze=False)
    for ax, (ylabel, series) in zip(axes[0], panels.items()):
        ticks: set[float] = set()
        for i, (label, pts) in enumerate(series.items()):
            good = sorted((x, y) for x, y in pts if _finite(y) and y > 0 and x > 0)
            if not good:
                continue
            xs, ys = zip(*good)
            ticks.update(xs)
            style = {"color": "k", "ls": "--"} if label == "forward" else {"color": f"C{i}"}
            ax.plot(xs, ys, marker="o", ms=4, label=label, **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        if ticks:  # label the measured sizes, not the log axis' minor ticks
            ax.set_xticks(sorted(ticks), [f"{x:g}" for x in sorted(ticks)])
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=8)
    return _save(fig, path, title)
