"""The e-prop network ``Stack(LIF | ALIF, LeakyReadout)``: its forward pass and its eligibility
recursions written from Bellec et al. (2020), in the step ordering of chronograd's cells.

This is e-prop's fast path (:class:`~chronograd.rules.EProp`): the network is run with its
own cells, without a graph, and the traces are advanced in closed form; the evaluations that
contract them are in :mod:`chronograd.traces.eprop_evaluation`.

Step ``t`` of the hidden layer (:mod:`chronograd.cells.lif`) receives ``u_t`` — ``x_t`` for
``W_in``, the constant 1 for its bias, ``z_{t-1}`` for ``W_rec`` — and, with
``ψ_t = ∂z_t/∂v_t = (γ/v_th) max(0, 1 − |v_t − A_t|/v_th)``, the eligibility vector
``ε_t = (ε^v_t, ε^a_t) = [∂(v_t, a_t)/∂W_ji]_local`` (per sample ``b``, input ``i``, neuron ``j``)
follows ``ε_t = M_t ε_{t-1} + (u_t, 0)`` with, ``r = 0`` when the reset's gradient is stopped
(the default, as in the reference code) and 1 otherwise::

    M_t = [[α − r v_th ψ_{t-1},   r v_th β ψ_{t-1}],
           [ψ_{t-1},              ρ − β ψ_{t-1}   ]]          (LIF: the top-left entry)

(the neuron's own Jacobian, :func:`chronograd.traces.analytic.alif_jacobian` /
:func:`~chronograd.traces.analytic.lif_jacobian`, the one definition shared with the trace
engine and the reverse adjoint)

    e_t = ψ_t (ε^v_t − β ε^a_t)                   eligibility trace  [∂z_t/∂W_ji]_local
    F_t = κ F_{t-1} + e_t                          the readout-filtered trace F_κ(e)

With ``r = 0``, ``ε^v_t = z̄_t = α z̄_{t-1} + u_t`` is the presynaptic trace (the paper's
``z̄^{t-1}``: it already contains this step's input), shared by every postsynaptic neuron, and
``ε^a_{t+1} = ψ_t z̄_t + (ρ − β ψ_t) ε^a_t`` is the paper's
``ε^a_{t+1} = ψ_t z̄_{t-1} + (ρ − ψ_t β) ε^a_t`` with ``e_t = ψ_t (z̄_t − β ε^a_t)`` (its
``z̄_{t-1}`` is our ``z̄_t``: the paper indexes the membrane update ``v_{t+1}`` by the spike
``z_t`` that enters it). The reference code (``EligALIF.compute_eligibility_traces``) runs
the same recursion (``ε^a`` from ``ψ`` and ``ε^v`` of the previous step).

Every trace is a per-sample linear recursion ``X_t = D_t X_{t-1} + ζ_t ⊗ c_t`` over a few
components per neuron (:func:`transition` builds ``D`` and ``c``); the rules then contract
``F`` with the learning signal (and, for the firing-rate regularizer, the running sum
``G_t = G_{t-1} + e_t`` with its own signal). The reference code adds a 5-step refractory
period; chronograd's LIF/ALIF have none.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from chronograd.cells.lif import ALIF, LIF
from chronograd.cells.readout import LeakyReadout
from chronograd.cells.stack import Stack
from chronograd.traces.analytic import alif_jacobian, lif_jacobian

Hidden = LIF | ALIF
HIDDEN_ROLES = ("w_in", "b_in", "w_rec")
OUTPUT_ROLES = ("w_out", "b_out")


class Net(NamedTuple):
    """The two layers of an e-prop network and the names of their parameters by role.

    Roles: ``w_in`` (H, I), ``b_in`` (H,), ``w_rec`` (H, H), ``w_out`` (O, H), ``b_out`` (O,).
    """

    hidden: Hidden
    readout: LeakyReadout
    names: dict[str, str]


def network(model: nn.Module) -> Net:
    """Split ``Stack(LIF | ALIF, LeakyReadout)``; any other model raises ``TypeError``."""
    layers = list(model.layers) if isinstance(model, Stack) else []
    if not (
        len(layers) == 2
        and isinstance(layers[0], (LIF, ALIF))
        and isinstance(layers[1], LeakyReadout)
    ):
        kinds = ", ".join(type(m).__name__ for m in layers) if layers else type(model).__name__
        raise TypeError(
            "e-prop trains one recurrent spiking layer read out by a leaky linear readout: "
            f"Stack(LIF or ALIF, LeakyReadout), got {kinds}. Fix: build "
            "Stack(ALIF(I, H, ...), LeakyReadout(H, O, kappa=...)) (chronograd.models."
            "build_model('lsnn', ...)), or use DRTRL / RTRL / BPTT for other architectures"
        )
    hidden, readout = layers[0], layers[1]
    assert isinstance(hidden, (LIF, ALIF)) and isinstance(readout, LeakyReadout)
    names = {"w_in": "layers.0.input.weight", "w_out": "layers.1.input.weight"}
    if hidden.input.bias is not None:
        names["b_in"] = "layers.0.input.bias"
    if hidden.recurrent is not None:
        names["w_rec"] = "layers.0.recurrent.weight"
    if readout.input.bias is not None:
        names["b_out"] = "layers.1.input.bias"
    return Net(hidden, readout, names)


def threshold(hidden: Hidden, state: Any) -> Tensor | float:
    """``A_t = v_th + β a_t`` (ALIF) or ``v_th`` (LIF)."""
    if isinstance(hidden, ALIF):
        return hidden.threshold + hidden.beta * state.a
    return hidden.threshold


def pseudo_derivative(hidden: Hidden, state: Any) -> Tensor:
    """``ψ = ∂z/∂v = H'((v − A)/v_th) / v_th`` with the cell's surrogate, ``(B, H)``."""
    th = hidden.threshold
    return hidden.surrogate.derivative((state.v - threshold(hidden, state)) / th) / th


class Block(NamedTuple):
    """``K`` steps of the network run without a graph.

    Attributes:
        x: ``(K, B, I)`` inputs.
        z: ``(K + 1, B, H)``: ``z[0]`` the spikes before the block (``z_{t0-1}``), ``z[k+1]``
            the spikes of step ``t0 + k``.
        psi: ``(K + 1, B, H)``: ``ψ`` at the same steps.
        y: ``(K, B, O)`` readout outputs.
        state: the model state after the block.
    """

    x: Tensor
    z: Tensor
    psi: Tensor
    y: Tensor
    state: Any


@torch.no_grad()
def run_block(net: Net, xs: Tensor, state: Any) -> Block:
    """Run ``xs`` (K, B, I) from ``state`` with the model's own cells (input maps hoisted, ``ψ``
    computed for all steps at once)."""
    hidden, readout = net.hidden, net.readout
    hs, rs = state
    u = hidden.input_map(xs)  # (K, B, H)
    zs = [hidden.spikes(hs.v, threshold(hidden, hs))]
    states = [hs]
    for k in range(xs.shape[0]):
        z, hs = hidden.step(u[k], hs)
        zs.append(z)
        states.append(hs)
    z_all = torch.stack(zs)  # (K + 1, B, H)
    psi = pseudo_derivative(hidden, type(hs)(*(torch.stack(f) for f in zip(*states))))
    uy = readout.input_map(z_all[1:])  # (K, B, O)
    ys = []
    for k in range(xs.shape[0]):
        y, rs = readout.step(uy[k], rs)
        ys.append(y)
    return Block(xs, z_all, psi, torch.stack(ys), (hs, rs))


def relation_input(role: str, blk: Block) -> Tensor:
    """``u_t`` of a hidden relation over the block, ``(K, B, I)``."""
    if role == "w_in":
        return blk.x
    if role == "b_in":
        return blk.x.new_ones(*blk.x.shape[:2], 1)
    return blk.z[:-1]  # w_rec: z_{t-1}


class Layout(NamedTuple):
    """Trace components per neuron: ``S`` in all, the filtered trace ``F`` and the sum ``G``.

    ``fold``: the reset's gradient is stopped, so ``ε^v = z̄`` is shared by all neurons and
    leaves the components (the recursion is driven by ``ζ = z̄`` instead of ``u``).
    """

    S: int
    F: int
    G: int | None
    fold: bool


def layout(hidden: Hidden, with_sum: bool) -> Layout:
    """Where each trace component of ``hidden`` lives (ε components, filtered trace, sum)."""
    fold = hidden.detach_reset
    eps = (0 if fold else 1) + (1 if isinstance(hidden, ALIF) else 0)  # ε components kept
    return Layout(eps + 1 + int(with_sum), eps, eps + 1 if with_sum else None, fold)


def transition(
    hidden: Hidden, kappa: float, psi_prev: Tensor, psi: Tensor, lay: Layout
) -> tuple[Tensor, Tensor]:
    """``D`` (K, B, H, S, S) and ``c`` (K, B, H, S) of ``X_t = D_t X_{t-1} + ζ_t ⊗ c_t``.

    Components (``F``: filtered trace, ``G``: running sum of ``e``), ``ψ_p = ψ_{t-1}``:

    * folded LIF, ``X = (F, G)``: ``D = diag(κ, 1)``, ``c = (ψ, ψ)``, ``ζ = z̄``;
    * folded ALIF, ``X = (E, F, G)`` with ``E_t = ε^a_{t+1}``: ``E_t = (ρ − βψ) E_{t-1} +
      ψ z̄_t`` and ``e_t = ψ z̄_t − βψ E_{t-1}``;
    * unfolded (reset gradient kept), ``X = (ε, F, G)``, ``ζ = u``: ``ε_t = M_t ε_{t-1} +
      (u_t, 0)``, ``e_t = c_tᵀ ε_t`` with ``c_t = (ψ_t, −βψ_t)``, so the rows of ``F`` and
      ``G`` hold ``c_tᵀ M_t``.

    Args:
        psi_prev, psi: ``(K, B, H)``: ``ψ_{t-1}`` and ``ψ_t`` over the block.
    """
    K, B, H = psi.shape
    S, F, G = lay.S, lay.F, lay.G
    if S == 1 and lay.fold:  # folded LIF without the sum: a broadcast view, no copy
        return psi.new_full((), kappa).expand(K, B, H, 1, 1), psi.unsqueeze(-1)
    D = psi.new_zeros(K, B, H, S, S)
    c = psi.new_zeros(K, B, H, S)
    D[..., F, F] = kappa
    c[..., F] = psi
    rows: list[tuple[int, Tensor]] = []
    if lay.fold:
        if isinstance(hidden, ALIF):  # E = component 0: the a-row of M with ψ_t, r = 0
            beta = hidden.beta
            _, _, dav, daa = alif_jacobian(
                psi, hidden.alpha, hidden.rho, beta, hidden.threshold, reset=False
            )
            D[..., 0, 0] = daa
            c[..., 0] = dav
            rows = [(0, -beta * psi)]
    else:
        alpha, th = hidden.alpha, hidden.threshold
        if isinstance(hidden, ALIF):
            beta = hidden.beta
            m = alif_jacobian(psi_prev, alpha, hidden.rho, beta, th, reset=True)
            D[..., 0, 0], D[..., 0, 1] = m[0], m[1]
            D[..., 1, 0], D[..., 1, 1] = m[2], m[3]
            cm = [psi * m[j] - beta * psi * m[2 + j] for j in (0, 1)]  # c_tᵀ M_t
            rows = [(0, cm[0]), (1, cm[1])]
        else:
            m0 = lif_jacobian(psi_prev, alpha, th, reset=True)
            D[..., 0, 0] = m0
            rows = [(0, psi * m0)]
        c[..., 0] = 1.0
    for j, val in rows:
        D[..., F, j] = val
    if G is not None:
        D[..., G, G] = 1.0
        c[..., G] = psi
        for j, val in rows:
            D[..., G, j] = val
    return D, c


def presynaptic(zbar: Tensor, alpha: Tensor, u: Tensor) -> Tensor:
    """``z̄_t = α z̄_{t-1} + u_t`` over a block; ``zbar`` (B, I) updated in place, history (K, B, I)."""
    hist = []
    for k in range(u.shape[0]):
        zbar.mul_(alpha).add_(u[k])
        hist.append(zbar.clone())
    return torch.stack(hist)


def readout_traces(kappa: float, z: Tensor, zk: Tensor, ck: Tensor) -> tuple[Tensor, Tensor]:
    """Exact traces of the readout's parameters: ``ẑ_t = κ ẑ_{t-1} + z_t`` (B, H) for ``W_out``
    and ``c_t = κ c_{t-1} + 1`` for its bias, updated in place; histories (K, B, H) and (K,)."""
    zh, ch = [], []
    for k in range(z.shape[0]):
        zk.mul_(kappa).add_(z[k])
        ck.mul_(kappa).add_(1.0)
        zh.append(zk.clone())
        ch.append(ck.clone())
    return torch.stack(zh), torch.stack(ch)


def readout_error(objective: Any, y: Tensor, targets: Any, w: Tensor) -> tuple[Tensor, Tensor]:
    """The block's loss ``Σ_k w_k ℓ_k`` and ``∂/∂y_t`` of it (the same-step error), ``(K, B, O)``."""
    y = y.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = (w * objective.per_sample(y, targets)).sum()
    (gy,) = torch.autograd.grad(loss, [y])
    return loss.detach(), gy
