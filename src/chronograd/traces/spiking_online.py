"""The layered spiking network of OSTL, OTPE and OSTTP, run one step at a time without a graph.

The network is ``Stack(LIF_1, ..., LIF_L, LeakyReadout)``; layer ``l`` receives ``x^l_t``
(``x^1_t = x_t``, ``x^{l+1}_t = z^l_t``)::

    v^l_t = α_l v^l_{t-1} + W^l x^l_t + b^l + R^l z^l_{t-1} − v_th z^l_{t-1}
    z^l_t = H((v^l_t − v_th)/v_th)           ψ^l_t = ∂z^l_t/∂v^l_t  (the cell's surrogate)
    y_t   = κ y_{t-1} + W_out z^L_t + b_out

(the reset term ``v_th z_{t-1}`` has its gradient stopped when the cell's ``detach_reset``).

:func:`run_step` advances every layer with the model's own cells and records, per layer, its
input ``x^l_t``, the previous spikes ``z^l_{t-1}``, ``ψ^l_{t-1}`` and ``ψ^l_t``;
:func:`spatial_signals` back-propagates a step's output error through the layers *of that step
only* (``∂ℓ_t/∂z^l_t`` along ``z^l_t → v^{l+1}_t → … → y_t``, every path through time cut);
:class:`ReadoutTraces` gives the readout's exact online gradient. The rules add their own
eligibility traces on top.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from chronograd.cells.lif import LIF
from chronograd.cells.readout import LeakyReadout
from chronograd.cells.stack import Stack

ROLES = ("w_in", "b_in", "w_rec")


class SpikingNet(NamedTuple):
    """The layers of ``Stack(LIF, ..., LIF, LeakyReadout)`` and their parameter names.

    Attributes:
        layers: the LIF layers, input first.
        readout: the leaky readout.
        names: per layer, ``{role: parameter name}`` for the roles ``w_in`` (H, I), ``b_in``
            (H,), ``w_rec`` (H, H) it has.
        out_names: ``{"w_out": ..., "b_out": ...}`` of the readout.
    """

    layers: list[LIF]
    readout: LeakyReadout
    names: list[dict[str, str]]
    out_names: dict[str, str]


def spiking_net(model: nn.Module, rule: str, recurrent: bool = True) -> SpikingNet:
    """Split ``Stack(LIF, ..., LIF, LeakyReadout)``; any other model raises ``TypeError``.

    Args:
        rule: the rule's name, for the message.
        recurrent: whether LIF layers with recurrent weights are accepted.
    """
    layers = list(model.layers) if isinstance(model, Stack) else []
    ok = (
        len(layers) >= 2
        and all(isinstance(m, LIF) for m in layers[:-1])
        and isinstance(layers[-1], LeakyReadout)
    )
    if not ok:
        kinds = ", ".join(type(m).__name__ for m in layers) if layers else type(model).__name__
        raise TypeError(
            f"{rule} trains a stack of spiking layers read out by a leaky linear readout: "
            f"Stack(LIF, ..., LIF, LeakyReadout), got {kinds}. Fix: build "
            "Stack(LIF(I, H, recurrent=False), ..., LeakyReadout(H, O, kappa=...)), or use "
            "OTTT / SLTT / BPTT for other architectures"
        )
    hidden: list[LIF] = [m for m in layers[:-1] if isinstance(m, LIF)]
    if not recurrent and any(m.recurrent is not None for m in hidden):
        raise TypeError(
            f"{rule} is defined for feed-forward spiking networks, got a LIF layer with "
            "recurrent weights. Fix: build LIF(..., recurrent=False), or use OSTL / e-prop for "
            "recurrent layers"
        )
    for m in hidden:
        if m.alpha.numel() != 1:
            raise TypeError(f"{rule} needs one membrane decay per LIF layer, got {m.alpha.numel()}")
    names = []
    for i, m in enumerate(hidden):
        n = {"w_in": f"layers.{i}.input.weight"}
        if m.input.bias is not None:
            n["b_in"] = f"layers.{i}.input.bias"
        if m.recurrent is not None:
            n["w_rec"] = f"layers.{i}.recurrent.weight"
        names.append(n)
    last = len(hidden)
    readout = layers[-1]
    assert isinstance(readout, LeakyReadout)
    out = {"w_out": f"layers.{last}.input.weight"}
    if readout.input.bias is not None:
        out["b_out"] = f"layers.{last}.input.bias"
    return SpikingNet(hidden, readout, names, out)


def psi_of(layer: LIF, v: Tensor) -> Tensor:
    """``ψ = ∂z/∂v = H'((v − v_th)/v_th) / v_th`` with the layer's surrogate, ``(B, H)``."""
    th = layer.threshold
    return layer.surrogate.derivative((v - th) / th) / th


class LayerStep(NamedTuple):
    """One layer at one step (all ``(B, ·)``).

    Attributes:
        x: the layer's input ``x^l_t``; z_prev: ``z^l_{t-1}``; z: ``z^l_t``.
        psi_prev: ``ψ^l_{t-1}``; psi: ``ψ^l_t``.
    """

    x: Tensor
    z_prev: Tensor
    z: Tensor
    psi_prev: Tensor
    psi: Tensor


@torch.no_grad()
def run_step(net: SpikingNet, x: Tensor, state: Any) -> tuple[list[LayerStep], Tensor, Any]:
    """One step of the network from ``state``: the per-layer records, ``y_t`` (B, O), new state."""
    states = list(state)
    recs = []
    inp = x
    for i, layer in enumerate(net.layers):
        hs = states[i]
        z_prev = layer.spikes(hs.v, layer.threshold)
        psi_prev = psi_of(layer, hs.v)
        z, hs = layer.step(layer.input_map(inp), hs)
        states[i] = hs
        recs.append(LayerStep(inp, z_prev, z, psi_prev, psi_of(layer, hs.v)))
        inp = z
    y, rs = net.readout.step(net.readout.input_map(inp), states[-1])
    states[-1] = rs
    return recs, y, tuple(states)


def relation_input(role: str, rec: LayerStep) -> Tensor:
    """The input ``u_t`` of a hidden relation, ``(B, I)`` (``1`` for the bias)."""
    if role == "w_in":
        return rec.x
    if role == "b_in":
        return rec.x.new_ones(rec.x.shape[0], 1)
    return rec.z_prev


def decay(layer: LIF, rec: LayerStep) -> Tensor | float:
    """``∂v_t/∂v_{t-1}`` of a neuron, recurrent weights left out: ``α − r v_th ψ_{t-1}``.

    A float ``α`` when the reset's gradient is stopped (the same for every neuron), else
    ``(B, H)``.
    """
    alpha = float(layer.alpha)
    if layer.detach_reset:
        return alpha
    return alpha - layer.threshold * rec.psi_prev  # analytic.lif_jacobian with the reset


def spatial_signals(net: SpikingNet, recs: list[LayerStep], gy: Tensor) -> list[Tensor]:
    """``∂ℓ_t/∂z^l_t`` (B, H_l) for every layer through step ``t`` only (``gy = ∂ℓ_t/∂y_t``)."""
    out: list[Tensor] = [gy.new_zeros(0)] * len(recs)
    g = gy @ net.readout.input.weight.detach().to(gy.dtype)  # (B, H_L)
    for i in range(len(recs) - 1, -1, -1):
        out[i] = g
        if i:
            g = (g * recs[i].psi) @ net.layers[i].input.weight.detach().to(gy.dtype)
    return out


def diagonal_trace(prev: Tensor | None, d: Tensor | float, u: Tensor) -> Tensor:
    """``ε_t = d_t ε_{t-1} + u_t`` per neuron: ``(B, 1, I)`` when ``d`` is a float, else
    ``(B, H, I)`` (``d`` (B, H))."""
    src = u[:, None, :]
    if isinstance(d, float):
        return src.clone() if prev is None else d * prev + src
    if prev is None:
        return src.expand(d.shape[0], d.shape[1], u.shape[1]).clone()
    return d[..., None] * prev + src


def contract(signal: Tensor, e: Tensor) -> Tensor:
    """``g_ji = Σ_b L_bj e_bji`` for a per-neuron trace ``e`` (B, H or 1, I): ``(H, I)``."""
    if e.shape[1] == 1:
        return signal.t() @ e[:, 0]
    return torch.einsum("bh,bhi->hi", signal, e)


class ReadoutTraces:
    """Exact online gradient of the readout: ``∂y_t/∂W_out = Σ_τ κ^{t-τ} z^L_τ`` (a trace of the
    readout's input, ``(B, H)``) and ``∂y_t/∂b_out = Σ_τ κ^{t-τ}``."""

    def __init__(self, traces: dict[str, Any]) -> None:
        self.t = traces

    def step(
        self,
        net: SpikingNet,
        params: dict[str, Any],
        z: Tensor,
        gy: Tensor,
        grads: dict[str, Tensor],
    ) -> None:
        """Advance the readout's ``κ``-traces of ``z`` (B, H) and of 1 by one step and add the
        readout's exact gradient ``gy``ᵀ (traces) for this step into ``grads``."""
        kappa = net.readout.kappa
        zk = self.t.get("out:z")
        zk = z.clone() if zk is None else kappa * zk + z
        ck = kappa * self.t.get("out:c", 0.0) + 1.0
        self.t["out:z"], self.t["out:c"] = zk, ck
        names = net.out_names
        if names["w_out"] in params:
            add(grads, names["w_out"], gy.t() @ zk)
        if "b_out" in names and names["b_out"] in params:
            add(grads, names["b_out"], gy.sum(0) * ck)


def add(grads: dict[str, Tensor], name: str, value: Tensor) -> None:
    """``grads[name] += value`` (creating it)."""
    grads[name] = grads[name] + value if name in grads else value


def finish(params: dict[str, Any], grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """Every trained parameter's gradient in its shape and dtype (zero where none was added)."""
    return {
        n: (grads[n] if n in grads else torch.zeros_like(p)).to(p.dtype).reshape(p.shape)
        for n, p in params.items()
    }


def check_trained(net: SpikingNet, params: dict[str, Any], rule: str) -> None:
    """Raise ``TypeError`` for a trained parameter the rule has no gradient for."""
    known = {n for d in net.names for n in d.values()} | set(net.out_names.values())
    other = sorted(set(params) - known)
    if other:
        raise TypeError(
            f"{rule} computes gradients for the layers' input, bias and recurrent weights and the "
            f"readout's, not for {other}; freeze them (requires_grad=False) or select the others "
            "with params=(...)"
        )
