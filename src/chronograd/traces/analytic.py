"""Analytic ``D`` and ``Df`` for the shipped cells: a fast path for the trace engine.

For a cell whose relations all enter its neurons through one input current (every relation
feeding the group has the same ``Df``), ``D`` and ``Df`` follow from the previous and the new
state in closed form; this skips one backward pass per step. Each formula is checked against
the autodiff value when the graph is compiled (at the probe state); a cell without a formula,
or whose formula disagrees there, uses the autodiff path, which is always available.

With ``ψ`` the surrogate derivative at the previous step's spike input and ``v_th`` the
threshold, relation outputs held fixed (``r`` = 1 when the reset gradient flows, else 0)::

    LIF           D = α - r ψ                                             Df = 1
    ALIF (v, a)   D = [[α - r ψ, r ψ β], [ψ/v_th, ρ - ψ β/v_th]]         Df = (1, 0)
    SynapticLIF   (v, i): D = [[α - r ψ, α_s], [0, α_s]]                 Df = (1, 1)
    LeakyReadout  D = κ                                                   Df = 1
    LeakyRNN      D = α,  Df = (1-α) φ'(a), φ(a) = (h_t - α h_{t-1})/(1-α)  (tanh, identity,
                  sigmoid, relu)
    DiagonalRNN   D = λ,  Df = sqrt(1 - λ²) (normalised) or 1
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from chronograd.cells.diagonal import DiagonalRNN
from chronograd.cells.lif import ALIF, LIF
from chronograd.cells.readout import LeakyReadout
from chronograd.cells.rnn import ACTIVATIONS, LeakyRNN
from chronograd.cells.synaptic import SynapticLIF

States = dict[str, Tensor]
Formula = Callable[[Any, States, States], tuple[Tensor, Tensor] | None]


def _psi(cell: Any, v: Tensor, threshold: Tensor | float) -> Tensor:
    """``∂z/∂v · v_th``: the surrogate derivative at the normalised distance to threshold."""
    return cell.surrogate.derivative((v - threshold) / cell.threshold)


def _blocks(rows: list[list[Tensor | float]], like: Tensor) -> Tensor:
    """``(B, H, S, S)`` from an ``S × S`` list of tensors or numbers."""

    def full(x: Tensor | float) -> Tensor:
        t = torch.as_tensor(x, dtype=like.dtype, device=like.device)
        return t.expand_as(like)

    if len(rows) == 1:  # S = 1: a broadcast view, no copy
        return full(rows[0][0])[..., None, None]
    return torch.stack([torch.stack([full(x) for x in r], -1) for r in rows], -2)


def _ones(like: Tensor) -> Tensor:
    """``Df = 1`` as a broadcast view ``(B, H, 1)``."""
    return like.new_ones(()).expand(*like.shape, 1)


def _lif(cell: LIF, prev: States, new: States) -> tuple[Tensor, Tensor]:
    v = prev["v"]
    d: Tensor | float = cell.alpha
    if not cell.detach_reset:
        d = cell.alpha - _psi(cell, v, cell.threshold)
    return _blocks([[d]], v), _ones(v)


def _alif(cell: ALIF, prev: States, new: States) -> tuple[Tensor, Tensor]:
    v, a = prev["v"], prev["a"]
    psi = _psi(cell, v, cell.threshold + cell.beta * a)
    r = 0.0 if cell.detach_reset else 1.0
    th = cell.threshold
    D = _blocks(
        [[cell.alpha - r * psi, r * psi * cell.beta], [psi / th, cell.rho - psi * cell.beta / th]],
        v,
    )
    return D, torch.stack([torch.ones_like(v), torch.zeros_like(v)], -1)


def _synaptic(cell: SynapticLIF, prev: States, new: States) -> tuple[Tensor, Tensor]:
    v = prev["v"]
    r = 0.0 if cell.detach_reset else 1.0
    psi = _psi(cell, v, cell.threshold) if r else 0.0
    D = _blocks([[cell.alpha - r * psi, cell.alpha_syn], [0.0, cell.alpha_syn]], v)
    return D, torch.ones(*v.shape, 2, dtype=v.dtype, device=v.device)


def _readout(cell: LeakyReadout, prev: States, new: States) -> tuple[Tensor, Tensor]:
    y = prev["y"]
    return _blocks([[cell.kappa]], y), _ones(y)


def _rnn(cell: LeakyRNN, prev: States, new: States) -> tuple[Tensor, Tensor] | None:
    h0, h1 = prev["h"], new["h"]
    phi = (h1 - cell.alpha * h0) / (1.0 - cell.alpha)
    act = cell.activation
    if act is torch.tanh:
        slope = 1.0 - phi * phi
    elif act is torch.sigmoid:
        slope = phi * (1.0 - phi)
    elif act is torch.relu:
        slope = (phi > 0).to(phi.dtype)
    elif act is ACTIVATIONS["identity"]:
        slope = torch.ones_like(phi)
    else:
        return None
    return _blocks([[cell.alpha]], h0), ((1.0 - cell.alpha) * slope).unsqueeze(-1)


def _diagonal(cell: DiagonalRNN, prev: States, new: States) -> tuple[Tensor, Tensor]:
    h = prev["h"]
    lam = cell.decay().detach()
    gain = torch.sqrt(1.0 - lam * lam) if cell.normalize else torch.ones_like(lam)
    return _blocks([[lam]], h), gain.expand_as(h).unsqueeze(-1)


FORMULAS: dict[type, Formula] = {
    LIF: _lif,
    ALIF: _alif,
    SynapticLIF: _synaptic,
    LeakyReadout: _readout,
    LeakyRNN: _rnn,
    DiagonalRNN: _diagonal,
}


def analytic_jacobians(cell: nn.Module, prev: States, new: States) -> tuple[Tensor, Tensor] | None:
    """``(D (B,H,S,S), Df (B,H,S))`` of a shipped cell in closed form, or None (no formula).

    Args:
        cell: the cell owning the group.
        prev, new: the group's state tensors before and after the step, by field name
            (``D`` and ``Df`` follow the order of the fields in the state).
    """
    formula = FORMULAS.get(type(cell))
    if formula is None:
        return None
    with torch.no_grad():
        return formula(cell, prev, new)
