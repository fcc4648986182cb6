"""D-RTRL's ``readout="filter"``: a leaky readout handled exactly for the layer feeding it.

With a readout ``y_t = κ y_{t-1} + W_out z_t + b`` (κ > 0) fed by the output ``z_t`` of a
hidden group with traces ``eW_t = D_t eW_{t-1} + z^in_t ⊗ Df_t`` (``S`` components per neuron),
the loss reaches ``W`` through ``z_t`` and the readout's memory::

    ∂E/∂W ≈ Σ_t L_t F_t,      F_t = κ F_{t-1} + σ_tᵀ eW_t,      L_t = W_outᵀ ∂ℓ_t/∂y_t

(``σ_t = ∂z_t/∂h_t`` per neuron): e-prop's readout-filtered trace ``F_κ``, for any hidden
cell. In trace-engine terms the group gains one state variable: ``F`` joins ``eW`` with::

    D' = [[D, 0], [σᵀ D, κ]],     Df' = (Df, σᵀ Df),     δ' = (δ − σ L, L)

and the same-step signal ``δ`` (which, for a group read out only by the readout, is ``σ L``)
keeps only what reaches the loss some other way. Per-neuron parameters of the group gain the
same row (``Dp' = (Dp, σᵀ Dp)``). :func:`filter_block` rewrites a
:class:`~chronograd.traces.TraceBlock` that way, so D-RTRL's trace code runs unchanged; with
``κ = 0`` the filter is the identity and is skipped.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import Tensor, nn

from chronograd._tree import tree_leaves, tree_unflatten
from chronograd.cells.base import param_like
from chronograd.cells.readout import LeakyReadout
from chronograd.cells.stack import Stack
from chronograd.traces.graph import TraceGraph
from chronograd.traces.probe import close
from chronograd.traces.structure import TraceBlock


class FilterTarget(NamedTuple):
    """Where the filter applies: the readout relation, the group feeding it, and ``κ``."""

    relation: int
    group: int
    kappa: float


def _fail(why: str) -> TypeError:
    return TypeError(
        f'DRTRL(readout="filter") {why}. It needs a Stack whose last layer is a LeakyReadout '
        "fed directly by a stateful cell (e.g. Stack(LIF(...), LeakyReadout(..., kappa=0.9))); "
        'use readout="state" (the default) for other models'
    )


def check_filter_model(model: nn.Module) -> None:
    """The model ends in ``LeakyReadout`` fed by a cell whose output is element-wise in its new
    state (``z_t[h]`` depends on neuron ``h``'s state only); raises ``TypeError`` otherwise."""
    layers = list(model.layers) if isinstance(model, Stack) else []
    if len(layers) < 2 or not isinstance(layers[-1], LeakyReadout):
        raise _fail(f"got {type(model).__name__} without a LeakyReadout as its last layer")
    cell = layers[-2]
    size = getattr(cell, "input_size", None)
    if not isinstance(size, int) or not callable(getattr(cell, "init_state", None)):
        raise _fail(f"got {type(cell).__name__} before the readout, which is not a cell")
    device, _ = param_like(model)
    cell = copy.deepcopy(cell).to(torch.float64)  # probed in float64, as the trace engine does
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, size, generator=g, dtype=torch.float64).to(device)
    state = cell.init_state(2, device=device, dtype=torch.float64)  # type: ignore[operator]
    leaves = [t + torch.randn(t.shape, generator=g).to(t) for t in tree_leaves(state)]
    leaves = [t.requires_grad_(True) for t in leaves]
    with torch.enable_grad():
        out, new = cell(x, tree_unflatten(state, leaves))
        new_leaves = [t for t in tree_leaves(new) if t.requires_grad]
        if not isinstance(out, Tensor) or not new_leaves:
            raise _fail(f"got {type(cell).__name__}, whose output is not a tensor of its state")
        rho = torch.randn(out.shape, generator=g).to(out)
        ones = torch.autograd.grad(
            out, new_leaves, torch.ones_like(out), retain_graph=True, allow_unused=True
        )
        rand = torch.autograd.grad(out, new_leaves, rho, allow_unused=True)
    for a, b, t in zip(ones, rand, new_leaves, strict=True):
        if a is None and b is None:
            continue
        if a is None or b is None or t.shape != out.shape or not close(b, a * rho):
            raise _fail(
                f"got {type(cell).__name__}, whose output mixes neurons' states (output unit h "
                "must depend on neuron h only)"
            )


def filter_target(model: nn.Module, graph: TraceGraph) -> FilterTarget | None:
    """The readout relation and the group feeding it (None when ``κ = 0``: nothing to filter)."""
    layers = list(model.layers)  # type: ignore[arg-type]
    readout = layers[-1]
    assert isinstance(readout, LeakyReadout)
    if readout.kappa == 0.0:
        return None
    n = len(layers)
    names = {id(p): name for name, p in model.named_parameters()}
    weight = names.get(id(readout.input.weight))
    rel = [i for i, r in enumerate(graph.relations) if r.weight == weight and not r.hoisted]
    owner = f"layers.{n - 2}"
    groups = [i for i, g in enumerate(graph.groups) if g.owner == owner]
    if len(rel) != 1 or len(groups) != 1:
        raise _fail(
            f"found {len(rel)} readout relation(s) and {len(groups)} hidden group(s) owned by "
            f"{owner}, expected one of each"
        )
    return FilterTarget(rel[0], groups[0], readout.kappa)


def _extend(x: Tensor, sigma: Tensor) -> Tensor:
    """``(x, σᵀ x)``: append the filtered component to a ``(K, B, H, S)`` tensor."""
    return torch.cat([x, (sigma * x).sum(-1, keepdim=True)], -1)


def filter_block(graph: TraceGraph, blk: TraceBlock, target: FilterTarget) -> TraceBlock:
    """The block with the target group augmented by ``F`` (see the module docstring)."""
    assert blk.readout is not None, "run the block with readout=(relation, group)"
    sigma, L = blk.readout
    gi = target.group
    Dg = blk.D[gi]  # (K, B, H, S, S)
    K, B, H, S, _ = Dg.shape
    D = Dg.new_zeros(K, B, H, S + 1, S + 1)
    D[..., :S, :S] = Dg
    D[..., S, :S] = (sigma.unsqueeze(-1) * Dg).sum(-2)  # σᵀ D
    D[..., S, S] = target.kappa
    Ds = tuple(D if i == gi else d for i, d in enumerate(blk.D))
    Df = tuple(
        _extend(d, sigma) if d is not None and graph.relations[i].group == gi else d
        for i, d in enumerate(blk.Df)
    )
    Dp = {k: _extend(v, sigma) if k[1] == gi else v for k, v in blk.Dp.items()}
    delta = blk.delta
    if delta is not None:
        assert L is not None
        d = delta[gi]
        new = torch.cat([d - sigma * L.unsqueeze(-1), L.unsqueeze(-1)], -1)
        delta = tuple(new if i == gi else x for i, x in enumerate(delta))
    prev = blk.delta_prev
    if prev is not None:
        p = prev[gi]
        pad = torch.cat([p, torch.zeros_like(p[..., :1])], -1)
        prev = tuple(pad if i == gi else x for i, x in enumerate(prev))
    return blk._replace(D=Ds, Df=Df, Dp=Dp, delta=delta, delta_prev=prev)
