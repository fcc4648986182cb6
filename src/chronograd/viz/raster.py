"""Spike raster with membrane and readout traces for one sequence of a model.

::

    from chronograd.activity import record
    from chronograd.viz import raster
    raster(record(model, xs), "raster.png", inputs=xs, targets=ys, sample=0)

Panels, top to bottom, sharing the time axis: the inputs (a raster when they are spikes, a
heat map otherwise), then for every hidden layer its spikes (raster) or its activity (heat map)
and, when its state has a membrane potential ``v``, the traces of the most active neurons, and
last the readout traces (with the target when one is given).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor

from chronograd.activity import LayerActivity, is_binary


def _spikes(ax: Any, z: Tensor, label: str, max_neurons: int) -> None:
    """Raster of a ``(T, N)`` spike train (first ``max_neurons`` units)."""
    z = z[:, :max_neurons]
    t, n = torch.nonzero(z, as_tuple=True)
    ax.scatter(t.numpy(), n.numpy(), s=2, marker="|", color="k", linewidths=0.8)
    ax.set_ylim(-0.5, z.shape[1] - 0.5)
    rate = float(z.mean())
    ax.set_ylabel(f"{label}\nunit")
    ax.set_title(f"{label}: spikes ({rate:.3f} per unit and step)", fontsize=9, loc="left")


def _heat(ax: Any, h: Tensor, label: str, max_neurons: int) -> None:
    """Heat map of a ``(T, N)`` activity."""
    h = h[:, :max_neurons]
    ax.imshow(h.T.numpy(), aspect="auto", origin="lower", interpolation="nearest", cmap="viridis")
    ax.set_ylabel(f"{label}\nunit")
    ax.set_title(f"{label}: activity", fontsize=9, loc="left")


def _traces(ax: Any, v: Tensor, z: Tensor | None, label: str, n: int) -> None:
    """Traces of ``n`` units of a ``(T, N)`` variable, the most active first."""
    score = z.sum(0) if z is not None else v.var(0)
    idx = torch.argsort(score, descending=True)[:n]
    for i in idx.tolist():
        ax.plot(v[:, i].numpy(), lw=0.8, label=f"unit {i}")
    ax.set_ylabel(label)
    ax.legend(fontsize=7, loc="upper right", ncol=min(n, 4))


def _target_text(targets: Any, sample: int) -> str | None:
    if isinstance(targets, Tensor) and not targets.is_floating_point() and targets.dim() >= 2:
        labels = torch.unique(targets[:, sample])
        return "target class " + ", ".join(str(int(c)) for c in labels)
    return None


def raster(
    activity: list[LayerActivity],
    path: str | Path,
    *,
    inputs: Tensor | None = None,
    targets: Any = None,
    sample: int = 0,
    max_neurons: int = 100,
    traces: int = 4,
    title: str = "",
) -> Path:
    """Plot one sequence's spikes, membrane potentials and readout to a PNG.

    Args:
        activity: from :func:`chronograd.activity.record`.
        path: the PNG file to write.
        inputs: the ``(T, B, I)`` inputs, shown on top.
        targets: ``(T, B, O)`` regression targets (drawn dashed over the readout) or ``(T, B)``
            class labels (named in the readout's title).
        sample: which sequence of the batch to show.
        max_neurons: at most this many units per raster or heat map.
        traces: membrane traces per layer (the most active units).
        title: figure title.
    """
    if not activity:
        raise ValueError("activity is empty: pass the list returned by chronograd.activity.record")
    B = activity[0].output.shape[1]
    if not 0 <= sample < B:
        raise ValueError(f"sample must lie in [0, {B}), got {sample}")
    panels: list[tuple[str, Any]] = []
    if inputs is not None:
        panels.append(("inputs", inputs[:, sample].detach().cpu().float()))
    for layer in activity[:-1]:
        out = layer.output[:, sample].detach().cpu().float()
        panels.append(("layer", (layer.name, out, layer.spiking)))
        if "v" in layer.state:
            v = layer.state["v"][:, sample].detach().cpu().float()
            panels.append(("membrane", (layer.name, v, out if layer.spiking else None)))
    last = activity[-1]
    panels.append(("readout", (last.name, last.output[:, sample].detach().cpu().float())))

    heights = [2.0 if kind in ("inputs", "layer") else 1.4 for kind, _ in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(9, sum(heights) + 0.8), sharex=True, squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )  # fmt: skip
    for ax, (kind, data) in zip(axes[:, 0], panels):
        if kind == "inputs":
            (_spikes if is_binary(data) else _heat)(ax, data, "input", max_neurons)
        elif kind == "layer":
            name, out, spiking = data
            (_spikes if spiking else _heat)(ax, out, name, max_neurons)
        elif kind == "membrane":
            name, v, z = data
            _traces(ax, v, z, f"{name}\nv", traces)
        else:
            name, y = data
            for o in range(y.shape[1]):
                ax.plot(y[:, o].numpy(), lw=1.0, label=f"output {o}")
            if isinstance(targets, Tensor) and targets.is_floating_point():
                tgt = targets[:, sample].detach().cpu().float().reshape(y.shape[0], -1)
                for o in range(tgt.shape[1]):
                    ax.plot(tgt[:, o].numpy(), "--", lw=1.0, color=f"C{o}", label=f"target {o}")
            text = _target_text(targets, sample)
            ax.set_title(
                f"{name}: readout" + (f" ({text})" if text else ""), fontsize=9, loc="left"
            )
            ax.set_ylabel("readout")
            ax.legend(fontsize=7, loc="upper left", ncol=4)
        ax.grid(alpha=0.2)
    axes[-1, 0].set_xlabel("time step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
