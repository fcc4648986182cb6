"""Online spatio-temporal learning with target projection, OSTTP (Ortner et al., AICAS 2023).

OSTTP keeps OSTL's temporal part (:class:`~chronograd.rules.OSTL`: per-neuron eligibility
traces inside each layer) and replaces its spatial part, the learning signal back-propagated
through the layers, by a fixed random projection of the *target* (direct random target
projection, Frenkel et al. 2021): no backward pass through the layers, no weight symmetry, and
a hidden layer's update needs nothing from the layers above. For the spiking network of
:mod:`chronograd.traces.spiking_online` (LIF layers ``l = 1..L``, a leaky readout)::

    ∇W^l = Σ_t Σ_b L^l_{t,bj} ε^l_{t,bji}
    L^l_t = w_t · ψ^l_t ⊙ (B_l e*_t),        e*_t = −y*_t
    ε^l_{t,ji} = (α_l − r v_th ψ^l_{t-1,j}) ε^l_{t-1,ji} + u^l_{t,i}

``B_l`` (H_l, O) is a fixed random matrix per layer (seeded; :mod:`chronograd.traces.feedback`),
``y*_t`` the target (the one-hot class for an integer target), ``w_t`` the objective's loss
weight of the step (zero where no target counts; the projection is the error's sign estimate
``y_t − y*_t ≈ −y*_t`` of DRTP), ``u`` the layer's input (``1`` for the bias, ``z_{t-1}`` for
recurrent weights, whose mixing the trace leaves out), ``r = 0`` when the reset's gradient is
stopped. The readout is trained with its own error ``∂ℓ_t/∂y_t`` and its exact ``κ``-traces
(local to the output layer). Everything is carried forward in time: memory is flat in ``T``
(``O(B·H·I)`` per weight, ``O(B·I)`` with the reset's gradient stopped).

Ortner, Pes, Gentinetta, Frenkel, Pantazi: "Online Spatio-Temporal Learning with Target
Projection", IEEE AICAS 2023; Frenkel, Lefebvre, Bol: "Learning without feedback: fixed random
learning signals allow for feedforward training of deep neural networks", Front. Neurosci. 2021.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

import torch
import torch.nn.functional as F
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
from chronograd.traces.feedback import check_generator, random_feedback
from chronograd.traces.instantaneous import loss_weights
from chronograd.traces.spiking_online import (
    ROLES,
    ReadoutTraces,
    SpikingNet,
    add,
    check_trained,
    contract,
    decay,
    diagonal_trace,
    finish,
    relation_input,
    run_step,
    spiking_net,
)


def target_vector(target: Any, outputs: int, dtype: torch.dtype) -> Tensor:
    """``y*_t`` (B, O): an integer class target one-hot encoded, a float target as it is."""
    if not isinstance(target, Tensor):
        raise TypeError(
            f"OSTTP projects a tensor target, got {type(target).__name__}; use one output with "
            "class indices (B,) or target vectors (B, O)"
        )
    if not target.is_floating_point():
        return F.one_hot(target.long(), outputs).to(dtype)
    if target.shape[-1:] != (outputs,):
        raise ValueError(
            f"OSTTP projects targets of shape (B, {outputs}) (or class indices), got "
            f"{tuple(target.shape)}; give one target vector per output step"
        )
    return target.to(dtype)


def projections(net: SpikingNet, rule: OSTTP, like: Tensor) -> list[Tensor]:
    """``B_l`` (H_l, O) for every layer: drawn from ``seed + l``."""
    O = net.readout.output_size
    out = []
    for i, m in enumerate(net.layers):
        b = random_feedback(
            m.hidden_size, O, rule.feedback_init, seed=rule.feedback_seed + i,
            norm_clip=rule.feedback_norm_clip, device=like.device, dtype=like.dtype,
        )  # fmt: skip
        out.append(b)
    return out


@final
@dataclass(frozen=True)
class OSTTP(LearningRule):
    """OSTTP for ``Stack(LIF, ..., LIF, LeakyReadout)`` (see the module docstring).

    Args:
        feedback_init: generator of the projections ``B_l``: ``xavier_normal`` (default),
            ``kaiming_normal``, ``orthogonal``, ``unitary``, ``randn``, ``rand``, ``ones``.
        feedback_norm_clip: Frobenius-norm bound of each ``B_l`` (``None``: the generator's
            default).
        feedback_seed: ``B_l`` is drawn from ``feedback_seed + l`` (the same on every rank and
            device, so nothing needs saving).
        chunk_size: steps per update (``None``: one update per sequence, ``1``: every step).
        (plus the options shared by every rule, see :class:`LearningRule`)
    """

    feedback_init: str = "xavier_normal"
    feedback_norm_clip: float | None = None
    feedback_seed: int = 0
    chunk_size: int | None = None

    def _check(self) -> None:
        check_generator(self.feedback_init)
        if self.feedback_norm_clip is not None and not self.feedback_norm_clip > 0:
            raise ValueError(
                f"feedback_norm_clip must be > 0 (or None), got {self.feedback_norm_clip!r}"
            )
        if not isinstance(self.feedback_seed, int) or isinstance(self.feedback_seed, bool):
            raise TypeError(f"feedback_seed must be an int, got {self.feedback_seed!r}")
        check_chunk_size(self.chunk_size)

    def check_model(self, model: nn.Module) -> None:
        net = spiking_net(model, "OSTTP")
        check_trained(net, dict(self.trained(model)), "OSTTP")

    def init(self, model: nn.Module, state: State) -> Carry:
        self.check_model(model)
        return {}

    def feedback_matrices(self, model: nn.Module) -> list[Tensor]:
        """The projections ``B_l`` (H_l, O), in the readout weight's device and dtype."""
        net = spiking_net(model, "OSTTP")
        return projections(net, self, net.readout.input.weight)

    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        net = spiking_net(model, "OSTTP")
        params: dict[str, Any] = dict(self.trained(model))
        w = loss_weights(objective, xs, span)  # (T, B)
        traces: dict[str, Any] = dict(carry)
        if "B" not in traces:
            traces["B"] = projections(net, self, w)
        fb: list[Tensor] = traces["B"]
        readout = ReadoutTraces(traces)
        O = net.readout.output_size
        grads: dict[str, Tensor] = {}
        total = xs.new_zeros((), dtype=w.dtype)
        outs = []
        for t in range(xs.shape[0]):
            recs, y, state = run_step(net, xs[t], state)
            outs.append(y)
            target = time_slice(targets, t, t + 1)
            loss, gy = readout_error(objective, y[None], target, w[t : t + 1])
            total = total + loss
            readout.step(net, params, recs[-1].z, gy[0], grads)
            counted = bool(w[t].ne(0).any())
            e = -w[t][:, None] * target_vector(target[0], O, w.dtype) if counted else None
            for i, (layer, rec) in enumerate(zip(net.layers, recs)):
                d = decay(layer, rec)
                signal = None if e is None else rec.psi * (e @ fb[i].t())  # (B, H)
                for role in ROLES:
                    name = net.names[i].get(role)
                    if name is None or name not in params:
                        continue
                    key = f"{i}:{role}"
                    tr = traces[key] = diagonal_trace(traces.get(key), d, relation_input(role, rec))
                    if signal is not None:
                        add(grads, name, contract(signal, tr))
        for n, g in (penalty_grads(objective, params) or {}).items():
            add(grads, n, g)
        out = finish(params, grads)
        return RuleStep(out, state, traces, total.detach(), torch.stack(outs))
