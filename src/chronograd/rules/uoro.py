"""UORO: unbiased online recurrent optimization (Tallec & Ollivier 2018).

RTRL's influence matrix ``M_t = dh_t/dθ`` (per sample, ``N × |θ|``) is replaced by a rank-1
estimate ``h̃_t θ̃_tᵀ`` with ``E[h̃_t θ̃_tᵀ] = M_t``. With random signs ``ν`` (per sample, one per
state variable) drawn at every step::

    h̃_t = ρ0 J_t h̃_{t-1} + ρ1 ν          θ̃_t = θ̃_{t-1} / ρ0 + (νᵀ ∂f/∂θ|_t) / ρ1
    ρ0 = sqrt(‖θ̃_{t-1}‖ / ‖J_t h̃_{t-1}‖)   ρ1 = sqrt(‖νᵀ ∂f/∂θ|_t‖ / ‖ν‖)      (+ ε each)

(``J_t = ∂f/∂h_{t-1}``: one forward-mode JVP; ``νᵀ ∂f/∂θ``: one per-sample reverse-mode VJP).
The scalings ``ρ`` minimise the variance of the estimate and keep it unbiased: ``ρ0`` does not
depend on the new noise and ``ρ1`` is even in ``ν``, so the cross terms vanish in expectation.
The gradient of the loss of step ``t`` (which reads the step's output, a function of
``h_{t-1}``) is::

    dℓ_t/dθ ≈ ∂ℓ_t/∂θ|_{h_{t-1}} + (∂ℓ_t/∂h_{t-1} · h̃_{t-1}) θ̃_{t-1}

``samples=R`` runs ``R`` independent estimates at once (``vmap``) and averages them: the
variance falls as ``1/R``. The noise comes from a ``torch.Generator`` seeded with ``seed`` and
kept in the carry: the same seed gives the same estimate; the generator's state survives
sequences (the rule is a :class:`~chronograd.rules.PersistentCarry`) and trainer checkpoints.
Memory ``O(R·B·(N + |θ|))``, time a few step evaluations per step: the cheapest unbiased
online rule, with a variance that grows with the network.

Tallec & Ollivier (2018), "Unbiased online recurrent optimization", ICLR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, final

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp, vmap

from chronograd._tree import detach, tree_leaves, tree_stack, tree_unflatten
from chronograd.cells.base import State
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


class UOROCarry(NamedTuple):
    """``h``: per state leaf ``(R, B, ...)``; ``theta``: ``(R, B, |θ|)`` (None at a sequence
    start); ``generator``: the noise's generator (CPU). A named tuple: the non-finite policies
    repair its tensors."""

    generator: torch.Generator
    h: list[Tensor] | None = None
    theta: Tensor | None = None


@final
@dataclass(frozen=True)
class UORO(LearningRule, PersistentCarry):
    """UORO's rank-1 unbiased estimate of RTRL (see the module docstring).

    Args:
        seed: seed of the noise generator (kept in the carry and checkpointed).
        samples: independent rank-1 estimates averaged (``R``; variance ``∝ 1/R``).
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

    def init(self, model: nn.Module, state: State) -> Carry:
        return UOROCarry(torch.Generator().manual_seed(self.seed))

    def start_sequence(self, model: nn.Module, state: State, carry: Carry) -> Carry:
        return UOROCarry(carry.generator)

    def carry_state_dict(self, carry: Carry) -> dict[str, Any] | None:
        return generator_state(carry.generator)

    def load_carry_state_dict(self, model: nn.Module, state: dict[str, Any]) -> Carry:
        return UOROCarry(load_generator(state))

    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        params = self.trained(model)
        names = list(params)
        sizes = [params[n].numel() for n in names]
        R = self.samples
        leaves = [leaf.detach() for leaf in tree_leaves(state)]
        T, B = xs.shape[0], xs.shape[1]
        dtype = leaves[0].dtype if leaves else xs.dtype
        w = objective.weights(
            span.total, B, start=span.start, stop=span.stop, device=xs.device, dtype=dtype
        )
        p0 = {n: params[n].detach() for n in names}
        h_tilde = carry.h or [leaf.new_zeros(R, *leaf.shape) for leaf in leaves]
        theta = carry.theta
        if theta is None:
            theta = xs.new_zeros(R, B, sum(sizes), dtype=dtype)
        grad = {n: torch.zeros_like(p0[n]) for n in names}
        outs, total = [], torch.zeros((), device=xs.device, dtype=dtype)
        for t in range(T):
            # the loss of the step: ∂ℓ_t/∂θ|_{h_{t-1}} and ∂ℓ_t/∂h_{t-1}
            out, new_state, ell, h_req = step_loss(
                model, xs[t], state, leaves, targets, t, w[t], objective
            )
            if ell.requires_grad and bool(w[t].ne(0).any()):
                got = torch.autograd.grad(
                    ell, [params[n] for n in names] + h_req, allow_unused=True
                )
                for n, g in zip(names, got):
                    if g is not None:
                        grad[n] = grad[n] + g
                c = sum(  # (R, B): ∂ℓ_t/∂h_{t-1} · h̃_{t-1}
                    (g.unsqueeze(0) * ht).flatten(2).sum(-1)
                    for g, ht in zip(got[len(names) :], h_tilde)
                    if g is not None
                )
                if isinstance(c, Tensor):
                    flat = torch.einsum("rb,rbp->p", c.to(theta.dtype), theta) / R
                    for n, g in zip(names, flat.split(sizes)):
                        grad[n] = grad[n] + g.reshape(grad[n].shape)
            h_tilde, theta = self._advance(model, state, xs[t], leaves, p0, h_tilde, theta, carry)
            leaves = [leaf.detach() for leaf in tree_leaves(new_state)]
            state = tree_unflatten(state, leaves)
            outs.append(detach(out))
            total = total + ell.detach()
        pen = penalty_grads(objective, dict(params))
        for name, v in (pen or {}).items():
            grad[name] = grad[name] + v
        new_carry = UOROCarry(carry.generator, h_tilde, theta)
        return RuleStep(grad, state, new_carry, total, tree_stack(outs))

    def _advance(
        self,
        model: nn.Module,
        state: State,
        x: Tensor,
        leaves: list[Tensor],
        p0: dict[str, Tensor],
        h_tilde: list[Tensor],
        theta: Tensor,
        carry: UOROCarry,
    ) -> tuple[list[Tensor], Tensor]:
        """One UORO step of ``(h̃, θ̃)``."""
        R, B = theta.shape[0], theta.shape[1]

        def step(h: tuple[Tensor, ...], p: dict[str, Tensor], x: Tensor) -> tuple[Tensor, ...]:
            _, new = functional_call(model, p, (x, tree_unflatten(state, list(h))))
            return tuple(tree_leaves(new))

        # J_t h̃_{t-1}, for the R estimates at once
        def push(tan: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            return jvp(lambda *h: step(h, p0, x), tuple(leaves), tan)[1]

        Jh = list(vmap(push)(tuple(h_tilde)))
        nu = [signs(carry.generator, (R, *leaf.shape), leaf) for leaf in leaves]

        # νᵀ ∂f/∂θ per sample (vmap over the batch) and per estimate (vmap over R)
        def pull(h_b: tuple[Tensor, ...], x_b: Tensor, nu_b: tuple[Tensor, ...]) -> Tensor:
            def one(p: dict[str, Tensor]) -> tuple[Tensor, ...]:
                new = step(tuple(v.unsqueeze(0) for v in h_b), p, x_b.unsqueeze(0))
                return tuple(v.squeeze(0) for v in new)

            back = vjp(one, p0)[1]

            def flat(cot: tuple[Tensor, ...]) -> Tensor:
                g = back(cot)[0]
                return torch.cat([g[n].reshape(-1) for n in p0])

            return vmap(flat)(nu_b)  # (R, P)

        nu_b = tuple(v.movedim(1, 0) for v in nu)  # (B, R, ...)
        vt = vmap(pull)(tuple(leaves), x, nu_b).movedim(1, 0).to(theta.dtype)  # (R, B, P)

        def norm(ts: list[Tensor]) -> Tensor:
            sq = torch.stack([(v.reshape(R, B, -1) ** 2).sum(-1) for v in ts])
            return torch.sqrt(sq.sum(0))  # (R, B)

        rho0 = torch.sqrt(theta.norm(dim=-1) / (norm(Jh).to(theta.dtype) + EPS)) + EPS
        rho1 = torch.sqrt(vt.norm(dim=-1) / (norm(nu).to(theta.dtype) + EPS)) + EPS

        def per(r: Tensor, v: Tensor) -> Tensor:  # broadcast (R, B) over v's trailing axes
            return r.reshape(R, B, *([1] * (v.dim() - 2))).to(v.dtype)

        h_new = [per(rho0, j) * j + per(rho1, n) * n for j, n in zip(Jh, nu)]
        theta_new = theta / rho0[..., None] + vt / rho1[..., None]
        return h_new, theta_new
