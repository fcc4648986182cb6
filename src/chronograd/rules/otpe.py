"""Online training with postsynaptic estimates, OTPE (Summe, Schaefer, Joshi, 2023).

OTPE extends OTTT (:class:`~chronograd.rules.OTTT`) for feed-forward spiking networks
(:mod:`chronograd.traces.spiking_online`: LIF layers ``l = 1..L`` without recurrent weights, a
leaky readout). OTTT keeps the presynaptic trace of each layer's input,
``â^l_t = α_l â^l_{t-1} + x^l_t`` (= ``∂v^l_t/∂W^l`` with the reset's gradient dropped), and
uses the spatial, same-step signal ``∂ℓ_t/∂v^l_t``::

    ∇W^l_OTTT = Σ_t (ψ^l_t ⊙ ∂ℓ_t/∂z^l_t)ᵀ â^l_t

so the effect of a spike ``z^l_τ`` on the loss at ``t > τ`` through the next layer's
membrane (which integrates it with the next layer's decay ``λ_{l+1}``) is lost. OTPE adds
that postsynaptic effect: the next layer's potential holds ``v^{l+1}_t ∋ W^{l+1} Σ_τ
λ_{l+1}^{t-τ} z^l_τ``, so ``∂v^{l+1}_t/∂W^l ≈ W^{l+1} R^l_t`` with the per-synapse trace::

    R^l_{t,ji} = λ_{l+1} R^l_{t-1,ji} + ψ^l_{t,j} â^l_{t,i}          (R_{-1} = 0)
    ∇W^l = Σ_t Σ_b (∂ℓ_t/∂z^l_t)_{bj} R^l_{t,bji},    ∂ℓ_t/∂z^l_t = W^{l+1 ᵀ} ∂ℓ_t/∂v^{l+1}_t

with ``∂ℓ_t/∂v^{l+1}_t`` the spatial signal of the same step (through the layers above, as in
OTTT), ``λ_{l+1} = α_{l+1}`` for a hidden layer and ``κ`` for the readout (whose state
``y`` plays ``v^{L+1}``). The bias uses ``â = Σ λ^{t-τ}·1``. The readout's weights get their
exact gradient (the ``κ``-trace of ``z^L``).

Reductions: when the next layer has no memory (``λ_{l+1} = 0``: a readout with ``κ = 0``)
``R^l_t = ψ^l_t â^l_t`` and OTPE *is* OTTT (traces on every input). On one hidden layer with
the reset's gradient stopped, OTPE is exact (BPTT) for any ``κ``: ``R`` is then the readout's
``κ``-filtered eligibility trace. What it still drops: the reset's gradient, and the next
layer's own reset and the effects two or more layers up through their memories. Memory flat in
``T``: ``O(B·H·I)`` per weight.

Summe, Schaefer, Joshi: "Estimating Post-Synaptic Effects for Online Training of Feed-Forward
SNNs", arXiv:2311.16151, 2023 (OTTT/OSTL 70.5 %, OTPE 75.2 %, BPTT 78.1 % on SHD).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

import torch
from torch import Tensor, nn

from chronograd.cells.base import State
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
    ReadoutTraces,
    add,
    check_trained,
    finish,
    relation_input,
    run_step,
    spatial_signals,
    spiking_net,
)


@final
@dataclass(frozen=True)
class OTPE(LearningRule):
    """OTPE for feed-forward ``Stack(LIF, ..., LIF, LeakyReadout)`` (see the module docstring).

    Args:
        chunk_size: steps per update (``None``: one update per sequence, ``1``: every step);
            the traces carry across the chunks of a sequence and restart with each sequence.
        (plus the options shared by every rule, see :class:`LearningRule`)
    """

    chunk_size: int | None = None

    def _check(self) -> None:
        check_chunk_size(self.chunk_size)

    def check_model(self, model: nn.Module) -> None:
        net = spiking_net(model, "OTPE", recurrent=False)
        check_trained(net, dict(self.trained(model)), "OTPE")

    def init(self, model: nn.Module, state: State) -> Carry:
        self.check_model(model)
        return {}

    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        net = spiking_net(model, "OTPE", recurrent=False)
        params: dict[str, Any] = dict(self.trained(model))
        w = loss_weights(objective, xs, span)  # (T, B)
        traces: dict[str, Any] = dict(carry)
        readout = ReadoutTraces(traces)
        L = len(net.layers)
        alphas = [float(m.alpha) for m in net.layers]
        after = [*alphas[1:], net.readout.kappa]  # λ_{l+1}
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
            for i in range(L):
                rec = recs[i]
                for role in ROLES:
                    name = net.names[i].get(role)
                    if name is None or name not in params:
                        continue
                    u = relation_input(role, rec)  # (B, I)
                    prev = traces.get(f"{i}:{role}:a")
                    a = traces[f"{i}:{role}:a"] = (
                        u.clone() if prev is None else alphas[i] * prev + u
                    )
                    src = rec.psi[:, :, None] * a[:, None, :]  # ψ_t â_t (B, H, I)
                    prev_r = traces.get(f"{i}:{role}:R")
                    r = src if prev_r is None else after[i] * prev_r + src
                    traces[f"{i}:{role}:R"] = r
                    add(grads, name, torch.einsum("bh,bhi->hi", gz[i], r))
        for n, g in (penalty_grads(objective, params) or {}).items():
            add(grads, n, g)
        out = finish(params, grads)
        return RuleStep(out, state, traces, total.detach(), torch.stack(outs))
