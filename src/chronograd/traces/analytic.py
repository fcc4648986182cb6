"""Analytic ``D`` and ``Df`` for the shipped cells: a fast path for the trace engine.

For a cell whose relations all enter its neurons through one input current (every relation
feeding the group has the same ``Df``), ``D`` and ``Df`` follow from the previous and the new
state in closed form; this skips one backward pass per step. Each formula is checked against
the autodiff value when the graph is compiled (at the probe state); a cell without a formula,
or whose formula disagrees there, uses the autodiff path, which is always available.

With ``ψ = ∂z/∂v`` the pseudo-derivative at the previous step's spike input (the surrogate's
derivative divided by the threshold ``v_th``), ``β`` the adaptation strength in voltage units
and relation outputs held fixed (``r`` = 1 when the reset gradient flows, else 0)::

    LIF           D = α - r v_th ψ                                        Df = 1
    ALIF (v, a)   D = [[α - r v_th ψ, r v_th β ψ], [ψ, ρ - β ψ]]          Df = (1, 0)
    SynapticLIF   (v, i): D = [[α - r v_th ψ, α_s], [0, α_s]]            Df = (1, 1)
    LeakyReadout  D = κ                                                   Df = 1
    LeakyRNN      D = α,  Df = (1-α) φ'(a), φ(a) = (h_t - α h_{t-1})/(1-α)  (tanh, identity,
                  sigmoid, relu)
    DiagonalRNN   D = λ,  Df = sqrt(1 - λ²) (normalised) or 1

The spiking cells' entries come from :func:`lif_jacobian` and :func:`alif_jacobian`, the one
definition of the LIF/ALIF Jacobian: e-prop's forward eligibility recursion and its reverse
adjoint (:mod:`chronograd.traces.eprop_network`, :mod:`chronograd.traces.eprop_evaluation`)
use them too.
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


Entry = Tensor | float


def lif_jacobian(psi: Entry, alpha: Entry, threshold: float, reset: bool) -> Entry:
    """``∂v_t/∂v_{t-1} = α − r v_th ψ`` of a LIF neuron (``r = 1`` when ``reset``, else 0).

    ``psi``: ``ψ = ∂z_{t-1}/∂v_{t-1}`` (any shape; unused without ``reset``, which returns
    ``alpha`` itself).
    """
    return alpha - threshold * psi if reset else alpha


def alif_jacobian(
    psi: Tensor, alpha: Entry, rho: Entry, beta: Entry, threshold: float, reset: bool
) -> tuple[Entry, Entry, Tensor, Tensor]:
    """The ALIF neuron's Jacobian ``∂(v_t, a_t)/∂(v_{t-1}, a_{t-1})`` as its four entries.

    With ``ψ = ∂z_{t-1}/∂v_{t-1}`` (the spike ``z_{t-1}`` resets ``v`` by ``v_th`` and raises
    the adaptation ``a`` by 1; the threshold is ``v_th + β a``) and ``r = 1`` when ``reset``::

        [[dvv, dva],    [[α − r v_th ψ,   r v_th β ψ],
         [dav, daa]] =   [ψ,              ρ − β ψ   ]]

    This is the eligibility-vector matrix ``M_t`` of e-prop (Bellec et al. 2020, built from
    ``ψ_{t-1}``) and the analytic ``D`` of the trace engine. Without ``reset`` ``dvv`` is
    ``alpha`` itself and ``dva`` the float 0.
    """
    dvv = lif_jacobian(psi, alpha, threshold, reset)
    dva: Entry = threshold * beta * psi if reset else 0.0
    return dvv, dva, psi, rho - beta * psi


def _psi(cell: Any, v: Tensor, threshold: Tensor | float) -> Tensor:
    """``ψ = ∂z/∂v``: the surrogate derivative at the normalised distance to threshold,
    divided by the threshold."""
    return cell.surrogate.derivative((v - threshold) / cell.threshold) / cell.threshold


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
    reset = not cell.detach_reset
    psi = _psi(cell, v, cell.threshold) if reset else 0.0
    return _blocks([[lif_jacobian(psi, cell.alpha, cell.threshold, reset)]], v), _ones(v)


def _alif(cell: ALIF, prev: States, new: States) -> tuple[Tensor, Tensor]:
    v, a = prev["v"], prev["a"]
    psi = _psi(cell, v, cell.threshold + cell.beta * a)
    reset = not cell.detach_reset
    dvv, dva, dav, daa = alif_jacobian(psi, cell.alpha, cell.rho, cell.beta, cell.threshold, reset)
    D = _blocks([[dvv, dva], [dav, daa]], v)
    return D, torch.stack([torch.ones_like(v), torch.zeros_like(v)], -1)


def _synaptic(cell: SynapticLIF, prev: States, new: States) -> tuple[Tensor, Tensor]:
    v = prev["v"]
    reset = not cell.detach_reset
    psi = _psi(cell, v, cell.threshold) if reset else 0.0
    dvv = lif_jacobian(psi, cell.alpha, cell.threshold, reset)
    D = _blocks([[dvv, cell.alpha_syn], [0.0, cell.alpha_syn]], v)
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
