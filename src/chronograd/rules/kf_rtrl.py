"""KF-RTRL: Kronecker-factored unbiased RTRL (Mujika, Meier & Steger 2018).

Defined for an RNN whose weights enter through one linear map of ``z_t = [h_{t-1}; x_t; 1]``:
chronograd's :class:`~chronograd.cells.LeakyRNN` (``α = 0``: the tanh RNN)::

    a_t = W z_t,   W = [W_rec  W_in  b]          h_t = α h_{t-1} + (1 - α) φ(a_t)
    D_t = (1 - α) φ'(a_t)                        J_t = α I + diag(D_t) W_rec

The influence of ``W`` (per sample, ``H × H·(H+I+1)``) is kept as one Kronecker product,
``dh_t/dW[k, j] ≈ u_t[j] A_t[:, k]`` (``u`` of size ``H + I + 1``, ``A`` ``H × H``). RTRL's
update of ``u_{t-1} ⊗ A_{t-1}`` is the sum of two Kronecker products, ``u_{t-1} ⊗ J_t A_{t-1}
+ z_t ⊗ diag(D_t)``, reduced to one without bias by random signs ``c1, c2``::

    u_t = c1 p1 u_{t-1} + c2 p2 z_t        A_t = c1 J_t A_{t-1} / p1 + c2 diag(D_t) / p2
    p1 = sqrt(‖J_t A_{t-1}‖ / ‖u_{t-1}‖)    p2 = sqrt(‖D_t‖ / ‖z_t‖)           (+ ε each)

(``E[u_t ⊗ A_t]`` is RTRL's update; the ``p`` minimise the variance). The gradient of the loss
of step ``t`` is ``∂ℓ_t/∂θ|_{h_{t-1}} + Σ_b (∂ℓ_t/∂h_{t-1} A_{t-1}) ⊗ u_{t-1}``. Memory
``O(B·(H² + I))`` against RTRL's ``O(B·H·|W|)``, time ``O(B·H³)`` per step; the variance is
lower than UORO's (the noise enters through two signs per sample, not one per unit).

The model is a ``LeakyRNN`` or a ``Stack`` of a ``LeakyRNN`` followed by memoryless layers
(``LeakyReadout`` with ``κ = 0``, ``Map``), whose parameters get their exact same-step
gradient. ``samples``, ``seed`` and the checkpointed generator are as in
:class:`~chronograd.rules.UORO`.

Mujika, Meier & Steger (2018), "Approximating real-time recurrent learning with random
Kronecker factors", NeurIPS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, final

import torch
from torch import Tensor, nn
from torch.func import jvp

from chronograd._tree import detach, tree_leaves, tree_stack, tree_unflatten
from chronograd.cells.base import State
from chronograd.cells.rnn import LeakyRNN
from chronograd.objectives import Objective
from chronograd.rules.base import (
    Carry,
    Chunk,
    LearningRule,
    PersistentCarry,
    RuleStep,
    check_chunk_size,
    penalty_grads,
)
from chronograd.traces.chunk import step_loss
from chronograd.traces.random_signs import (
    EPS,
    check_samples,
    check_seed,
    generator_state,
    load_generator,
    signs,
)


class KFCarry(NamedTuple):
    """``u`` ``(R, B, H + I + 1)`` and ``A`` ``(R, B, H, H)`` (None at a sequence start), and
    the noise's generator (a named tuple: the non-finite policies repair its tensors)."""

    generator: torch.Generator
    u: Tensor | None = None
    A: Tensor | None = None


def kf_cell(model: nn.Module) -> tuple[LeakyRNN, str]:
    """The model's ``LeakyRNN`` and its parameter prefix; ``TypeError`` naming the fix otherwise."""
    from chronograd.cells import LeakyReadout, Map, Stack

    if isinstance(model, LeakyRNN):
        return model, ""
    if isinstance(model, Stack) and isinstance(model.layers[0], LeakyRNN):
        for i, layer in enumerate(model.layers[1:], 1):
            memoryless = isinstance(layer, Map) or (
                isinstance(layer, LeakyReadout) and layer.kappa == 0.0
            )
            if not memoryless:
                raise TypeError(
                    f"KF-RTRL needs the layers after the LeakyRNN to be memoryless, but layer {i} "
                    f"is {type(layer).__name__}"
                    + (f" with kappa={layer.kappa}" if isinstance(layer, LeakyReadout) else "")
                    + "; use LeakyReadout(kappa=0) or Map, or train this model with 'uoro', "
                    "'snap' or 'rtrl'"
                )
        first = model.layers[0]
        assert isinstance(first, LeakyRNN)
        return first, "layers.0."
    raise TypeError(
        f"KF-RTRL is defined for an RNN whose weights enter through one linear map: a LeakyRNN, "
        f"or a Stack of a LeakyRNN and memoryless layers; got {type(model).__name__}. Train this "
        "model with 'uoro' (any cell), 'snap' or 'rtrl'"
    )


@final
@dataclass(frozen=True)
class KFRTRL(LearningRule, PersistentCarry):
    """Kronecker-factored RTRL for a LeakyRNN (see the module docstring).

    Args:
        seed: seed of the noise generator (kept in the carry and checkpointed).
        samples: independent estimates averaged (``R``; variance ``∝ 1/R``).
        chunk_size: steps per update (``None``: one update per sequence).
        (plus the options shared by every rule, see :class:`LearningRule`)
    """

    seed: int = 0
    samples: int = 1
    chunk_size: int | None = None

    def _check(self) -> None:
        check_seed(self.seed)
        check_samples(self.samples)
        check_chunk_size(self.chunk_size)

    def check_model(self, model: nn.Module) -> None:
        kf_cell(model)

    def init(self, model: nn.Module, state: State) -> Carry:
        self.check_model(model)
        return KFCarry(torch.Generator().manual_seed(self.seed))

    def start_sequence(self, model: nn.Module, state: State, carry: Carry) -> Carry:
        return KFCarry(carry.generator)

    def carry_state_dict(self, carry: Carry) -> dict[str, Any] | None:
        return generator_state(carry.generator)

    def load_carry_state_dict(self, model: nn.Module, state: dict[str, Any]) -> Carry:
        return KFCarry(load_generator(state))

    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        rnn, prefix = kf_cell(model)
        params = self.trained(model)
        names = list(params)
        R = self.samples
        T, B = xs.shape[0], xs.shape[1]
        leaves = [leaf.detach() for leaf in tree_leaves(state)]  # leaves[0]: the RNN's h
        dtype = leaves[0].dtype
        H, I = rnn.hidden_size, rnn.input_size
        W_in = rnn.input.weight.detach()
        b_in = None if rnn.input.bias is None else rnn.input.bias.detach()
        W_rec = None if rnn.recurrent is None else rnn.recurrent.weight.detach()
        cols = (H if W_rec is not None else 0) + I + (1 if b_in is not None else 0)
        w = objective.weights(
            span.total, B, start=span.start, stop=span.stop, device=xs.device, dtype=dtype
        )
        u = carry.u if carry.u is not None else xs.new_zeros(R, B, cols, dtype=dtype)
        A = carry.A if carry.A is not None else xs.new_zeros(R, B, H, H, dtype=dtype)
        grad = {n: torch.zeros_like(params[n].detach()) for n in names}
        G = xs.new_zeros(H, cols, dtype=dtype)  # the factored part, for [W_rec W_in b]
        eye = torch.eye(H, device=xs.device, dtype=dtype)
        outs, total = [], torch.zeros((), device=xs.device, dtype=dtype)
        for t in range(T):
            out, new_state, ell, h_req = step_loss(
                model, xs[t], state, leaves, targets, t, w[t], objective
            )
            if ell.requires_grad and bool(w[t].ne(0).any()):
                got = torch.autograd.grad(
                    ell, [params[n] for n in names] + h_req[:1], allow_unused=True
                )
                for n, g in zip(names, got):
                    if g is not None:
                        grad[n] = grad[n] + g
                gh = got[-1]
                if gh is not None:
                    v = torch.einsum("bh,rbhk->rbk", gh.to(dtype), A)  # ∂ℓ_t/∂h_{t-1} A_{t-1}
                    G = G + torch.einsum("rbk,rbj->kj", v, u) / R
            # advance (u, A) by step t
            h_prev, x = leaves[0], xs[t].to(dtype)
            a = x @ W_in.t()
            if b_in is not None:
                a = a + b_in
            if W_rec is not None:
                a = a + h_prev @ W_rec.t()
            dphi = jvp(rnn.activation, (a,), (torch.ones_like(a),))[1]
            alpha = rnn.alpha
            D = (1.0 - alpha) * dphi  # (B, H)
            J = alpha * eye.expand(B, H, H)
            if W_rec is not None:
                J = J + D[:, :, None] * W_rec
            parts = ([h_prev] if W_rec is not None else []) + [x]
            if b_in is not None:
                parts.append(torch.ones(B, 1, device=xs.device, dtype=dtype))
            z = torch.cat(parts, 1)  # (B, cols)
            JA = torch.einsum("bhk,rbkl->rbhl", J, A)
            p1 = torch.sqrt(JA.flatten(2).norm(dim=-1) / (u.norm(dim=-1) + EPS)) + EPS  # (R, B)
            p2 = torch.sqrt(D.norm(dim=-1) / (z.norm(dim=-1) + EPS)) + EPS  # (B,)
            c = signs(carry.generator, (2, R, B), z)
            u = (c[0] * p1)[..., None] * u + (c[1] * p2)[..., None] * z
            A = (c[0] / p1)[..., None, None] * JA + (c[1] / p2)[..., None, None] * torch.diag_embed(
                D
            )
            leaves = [leaf.detach() for leaf in tree_leaves(new_state)]
            state = tree_unflatten(state, leaves)
            outs.append(detach(out))
            total = total + ell.detach()
        at = 0
        for part, n in (("rec", "recurrent.weight"), ("in", "input.weight"), ("b", "input.bias")):
            size = {
                "rec": H if W_rec is not None else 0,
                "in": I,
                "b": 1 if b_in is not None else 0,
            }[part]
            name = prefix + n
            if size and name in grad:
                g = G[:, at : at + size]
                grad[name] = grad[name] + (g[:, 0] if part == "b" else g).to(grad[name].dtype)
            at += size
        pen = penalty_grads(objective, dict(params))
        for n, v in (pen or {}).items():
            grad[n] = grad[n] + v
        return RuleStep(grad, state, KFCarry(carry.generator, u, A), total, tree_stack(outs))
