"""Online spatio-temporal learning, OSTL (Bohnstingl et al., IEEE TNNLS 2022).

OSTL separates the gradient of a deep network into a *temporal* part, kept inside each layer
by forward eligibility traces, and a *spatial* part, the learning signal, back-propagated
through the layers of the current step only. For the spiking network of
:mod:`chronograd.traces.spiking_online` (LIF layers ``l = 1..L``, a leaky readout)::

    ∂E/∂θ^l ≈ Σ_t Σ_b L^l_{t} · e^l_{t}                         (per sample b)
    L^l_t = ∂ℓ_t/∂v^l_t = ψ^l_t ⊙ ∂ℓ_t/∂z^l_t     spatial: ∂ℓ_t/∂z^L_t = W_outᵀ ∂ℓ_t/∂y_t,
                                                   ∂ℓ_t/∂z^{l}_t = W^{l+1 ᵀ}(ψ^{l+1}_t ⊙ ∂ℓ_t/∂z^{l+1}_t)
    e^l_t = ∂v^l_t/∂θ^l  (temporal, within layer l):  e_t = J_t e_{t-1} + ∂v_t/∂θ |_{v_{t-1}}

* ``recurrent=False`` (the feed-forward form, default): ``J_t`` is each neuron's own
  ``∂v_t/∂v_{t-1} = α − r v_th ψ_{t-1}`` (``r = 0`` when the reset's gradient is stopped), so
  the trace of ``W_ji`` is ``ε_{t,ji} = J_{t,j} ε_{t-1,ji} + u_{t,i}`` (``u``: the layer's input,
  ``1`` for the bias, ``z_{t-1}`` for the recurrent weights; recurrent mixing dropped),
  ``(B, H, I)`` per weight (``(B, I)`` shared by the neurons when ``r = 0``).
* ``recurrent=True``: ``J_t`` is the layer's full Jacobian including the recurrent mixing,
  ``J_{t,km} = α δ_km + (R_km − r v_th δ_km) ψ_{t-1,m}``, and the sensitivity of ``W_ji`` is
  ``M_{t,kji} = Σ_m J_{t,km} M_{t-1,mji} + δ_kj u_{t,i}``, ``(B, H, H, I)``: exact RTRL
  within each layer (``O(B H² I)`` memory).

The readout's weights get their exact gradient (the ``κ``-trace of ``z^L`` and of ``1``).

What OSTL drops is stated in the paper: the paths from a layer's spikes at ``τ`` to the loss at
``t > τ`` *through later layers' states* (the next layer's membrane, the readout's ``κ``).
Exactness: on a single LIF layer read out without memory (``κ = 0``) OSTL equals BPTT (and
RTRL) — with the reset and, with ``recurrent=True``, the recurrent weights included; with
``recurrent=False`` and no recurrent weights any depth of layers equals the trace engine's
``DRTRL(mode="single-step")``. Memory is flat in ``T``.

Bohnstingl, Woźniak, Pantazi, Eleftheriou: "Online Spatio-Temporal Learning in Deep Neural
Networks", IEEE Transactions on Neural Networks and Learning Systems, 2022.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

import torch
from torch import Tensor, nn

from chronograd.cells.base import State
from chronograd.cells.lif import LIF
from chronograd.objectives import Objective
from chronograd.rules.base import (
    Carry,
    Chunk,
    LearningRule,
    RuleStep,
    check_chunk_size,
    penalty_grads,
)
from chronograd.traces.chunk import time_slice
from chronograd.traces.eprop_network import readout_error
from chronograd.traces.instantaneous import loss_weights
from chronograd.traces.spiking_online import (
    ROLES,
    LayerStep,
    ReadoutTraces,
    add,
    check_trained,
    contract,
    decay,
    diagonal_trace,
    finish,
    relation_input,
    run_step,
    spatial_signals,
    spiking_net,
)


def layer_jacobian(layer: LIF, rec: LayerStep) -> Tensor:
    """``J_t`` (B, H, H) of ``v_t`` w.r.t. ``v_{t-1}``, the recurrent mixing included."""
    B, H = rec.psi_prev.shape
    R = layer.recurrent.weight.detach().to(rec.psi_prev.dtype) if layer.recurrent else None
    J = rec.psi_prev.new_zeros(B, H, H)
    if R is not None:
        J = J + R[None] * rec.psi_prev[:, None, :]
    diag = rec.psi_prev.new_full((B, H), float(layer.alpha))
    if not layer.detach_reset:
        diag = diag - layer.threshold * rec.psi_prev
    return J + torch.diag_embed(diag)


def full_sensitivity(prev: Tensor | None, J: Tensor, u: Tensor) -> Tensor:
    """``M_t = J_t M_{t-1} + δ_kj u_i``: ``(B, H, H, I)`` (k: neuron, j: row of ``W``)."""
    H = J.shape[1]
    eye = torch.eye(H, dtype=u.dtype, device=u.device)
    src = eye[None, :, :, None] * u[:, None, None, :]
    if prev is None:
        return src
    return torch.einsum("bkm,bmji->bkji", J, prev) + src


@final
@dataclass(frozen=True)
class OSTL(LearningRule):
    """Online spatio-temporal learning for ``Stack(LIF, ..., LIF, LeakyReadout)``.

    Args:
        recurrent: ``False`` (default): per-neuron traces, the recurrent mixing left out of the
            transition; ``True``: the layer's full Jacobian block (exact RTRL within a layer,
            ``O(B H² I)`` memory per weight).
        chunk_size: steps per update (``None``: one update per sequence, ``1``: every step);
            the traces carry across the chunks of a sequence and restart with each sequence.
        (plus the options shared by every rule, see :class:`LearningRule`)
    """

    recurrent: bool = False
    chunk_size: int | None = None

    def _check(self) -> None:
        if not isinstance(self.recurrent, bool):
            raise TypeError(f"recurrent must be a bool, got {self.recurrent!r}")
        check_chunk_size(self.chunk_size)

    def check_model(self, model: nn.Module) -> None:
        net = spiking_net(model, "OSTL")
        check_trained(net, dict(self.trained(model)), "OSTL")

    def init(self, model: nn.Module, state: State) -> Carry:
        self.check_model(model)
        return {}

    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        net = spiking_net(model, "OSTL")
        params: dict[str, Any] = dict(self.trained(model))
        w = loss_weights(objective, xs, span)  # (T, B)
        traces: dict[str, Any] = dict(carry)
        readout = ReadoutTraces(traces)
        grads: dict[str, Tensor] = {}
        total = xs.new_zeros((), dtype=w.dtype)
        outs = []
        for t in range(xs.shape[0]):
            recs, y, state = run_step(net, xs[t], state)
            outs.append(y)
            loss, gy = readout_error(
                objective, y[None], time_slice(targets, t, t + 1), w[t : t + 1]
            )
            total = total + loss
            readout.step(net, params, recs[-1].z, gy[0], grads)
            gz = spatial_signals(net, recs, gy[0])
            for i, (layer, rec) in enumerate(zip(net.layers, recs)):
                signal = gz[i] * rec.psi  # ∂ℓ_t/∂v_t (B, H)
                full = self.recurrent and layer.recurrent is not None
                J = layer_jacobian(layer, rec) if full else None
                d = None if full else decay(layer, rec)
                for role in ROLES:
                    name = net.names[i].get(role)
                    if name is None or name not in params:
                        continue
                    key = f"{i}:{role}"
                    u = relation_input(role, rec)
                    if J is not None:
                        e = traces[key] = full_sensitivity(traces.get(key), J, u)
                        g = torch.einsum("bk,bkji->ji", signal, e)
                    else:
                        assert d is not None
                        e = traces[key] = diagonal_trace(traces.get(key), d, u)
                        g = contract(signal, e)
                    add(grads, name, g)
        for n, g in (penalty_grads(objective, params) or {}).items():
            add(grads, n, g)
        out = finish(params, grads)
        return RuleStep(out, state, traces, total.detach(), torch.stack(outs))
