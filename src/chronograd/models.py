"""Build standard models from a cell name (used by the CLI and the benchmarks)."""

from __future__ import annotations

import math
from typing import Any

from chronograd.cells import ALIF, GRU, LIF, LeakyReadout, LeakyRNN, Stack, lsnn_beta
from chronograd.cells.surrogate import decay

CELLS = ("rnn", "gru", "lif", "alif", "lsnn")


def lsnn_adaptation(tau_mem: float, tau_adapt: float, threshold: float) -> float:
    """e-prop's heuristic adaptation strength ``β = 1.7 (1-ρ)/(1-α)``, in units of ``v_th``."""
    return 1.7 * (1 - decay(tau_adapt)) / (1 - decay(tau_mem)) / threshold


def build_model(
    cell: str,
    input_size: int,
    output_size: int,
    hidden: int = 64,
    *,
    tau_mem: float = 20.0,
    tau_adapt: float = 2000.0,
    tau_out: float | None = None,
    threshold: float = 1.0,
    recurrent: bool = True,
    **_: Any,
) -> Stack:
    """A one-layer recurrent network with a (leaky) readout.

    Args:
        cell: ``rnn`` (tanh), ``gru``, ``lif``, ``alif`` or ``lsnn`` (half LIF, half ALIF).
        input_size, output_size, hidden: sizes.
        tau_mem, tau_adapt, threshold: spiking-neuron constants (steps).
        tau_out: readout leak time constant (``κ = exp(-1/τ_out)``); default: none for rate
            cells, ``tau_mem`` for spiking cells.
        recurrent: include recurrent weights.
        **_: other keyword hints (from ``Task.suggested``) are ignored.

    Returns:
        ``Stack(cell, LeakyReadout)``.
    """
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; available: {', '.join(CELLS)}")
    spiking = cell in ("lif", "alif", "lsnn")
    if tau_out is None:
        tau_out = tau_mem if spiking else None
    kappa = 0.0 if tau_out is None else math.exp(-1.0 / tau_out)
    if cell == "rnn":
        core: Any = LeakyRNN(input_size, hidden, recurrent=recurrent)
    elif cell == "gru":
        core = GRU(input_size, hidden)
    elif cell == "lif":
        core = LIF(input_size, hidden, recurrent=recurrent, tau_mem=tau_mem, threshold=threshold)
    else:
        beta = lsnn_adaptation(tau_mem, tau_adapt, threshold)
        b = lsnn_beta(hidden // 2, hidden - hidden // 2, beta) if cell == "lsnn" else beta
        core = ALIF(
            input_size, hidden, recurrent=recurrent, tau_mem=tau_mem, tau_adapt=tau_adapt,
            beta=b, threshold=threshold,
        )  # fmt: skip
    return Stack(core, LeakyReadout(hidden, output_size, kappa=kappa))
