"""Truncated backpropagation through time, TBPTT(k1, k2) (Williams & Peng 1990).

Every ``k1`` steps, the loss of those ``k1`` steps is back-propagated through the chunk and the
``k2 - k1`` steps before it, then the update is applied; the state is carried forward and
detached at the truncation point. ``k1 = k2 = k`` is Ignite's truncated trainer: split along
time (the last chunk may be shorter), detach between chunks, one update per chunk, report the
mean of the chunk losses. Each chunk's loss is the objective evaluated on that chunk's window
(``reduction="mean"`` averages over the chunk's counted steps).

For ``k2 > k1`` the carry keeps the last ``k2 - k1`` inputs, the detached state before the
oldest of them, and a snapshot of the parameters each of those steps ran with. They are re-run
from that snapshot (same values, fresh graph), so the gradient through the older steps uses the
weights they were computed with, exactly as if the graph had been kept, even when the optimizer
changed the weights in between. Cost: ``k2 - k1`` extra forward steps per chunk.

NeuroTorch's ``optim_time_steps`` / ``backward_time_steps`` are ``k1`` / ``k2``; leaving ``k1``
unset uses ``ceil(auto_ratio * T)`` (NeuroTorch's default ratio 0.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, final

import torch
from torch import Tensor, nn
from torch.func import functional_call

from chronograd._tree import detach
from chronograd.cells.base import State
from chronograd.objectives import Objective
from chronograd.rules.base import Carry, Chunk, LearningRule, RuleStep, grads_of
from chronograd.sequence import unroll, unroll_states


class _Past(NamedTuple):
    """One remembered step: its input ``(B, I)``, the detached state before it, its weights."""

    x: Tensor
    state: State
    weights: dict[str, Tensor]


class _Unroll(nn.Module):
    """Wraps a cell so ``functional_call`` can run a whole unroll with substituted weights."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, xs: Tensor, state: State) -> tuple[Any, State]:
        return unroll(self.cell, xs, state)


@final
@dataclass(frozen=True)
class TBPTT(LearningRule):
    """Truncated BPTT: update every ``k1`` steps, back-propagating through ``k2 ≥ k1`` steps.

    ``TBPTT(k1, k2)`` is the Williams–Peng spelling: the first argument, ``k1``, is the rule's
    ``chunk_size`` (steps per update, the option every rule shares).

    Args:
        chunk_size: ``k1``, steps between updates (``None``: ``ceil(auto_ratio * T)``).
        k2: steps back-propagated through (``None``: ``k1``). Must be ``≥ k1``.
        auto_ratio: fraction of ``T`` used when ``chunk_size`` is None.
        (plus the options shared by every rule, see :class:`LearningRule`)
    """

    chunk_size: int | None = None
    k2: int | None = None
    auto_ratio: float = 0.1

    @property
    def k1(self) -> int | None:
        """Williams & Peng's name for :attr:`chunk_size`."""
        return self.chunk_size

    def _check(self) -> None:
        for name, v in (("k1", self.chunk_size), ("k2", self.k2)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(
                    f"{name} must be a positive int (steps; k1 is TBPTT's chunk_size), got {v!r}"
                )
        if self.k1 is not None and self.k2 is not None and self.k1 > self.k2:
            raise ValueError(
                f"TBPTT needs k1 <= k2 (update every k1 steps, back-propagate through k2 >= k1), "
                f"got k1={self.k1} > k2={self.k2}"
            )
        if self.k1 is None and self.k2 is not None:
            raise ValueError("set k1 (chunk_size) when setting k2 (or neither, to use auto_ratio)")
        if not 0.0 < self.auto_ratio <= 1.0:
            raise ValueError(f"auto_ratio must lie in (0, 1], got {self.auto_ratio}")

    def chunk_length(self, total: int) -> int | None:
        return self.k1 if self.k1 is not None else max(1, math.ceil(self.auto_ratio * total))

    @property
    def history(self) -> int:
        """Steps kept from before each chunk (``k2 - k1``)."""
        return 0 if self.k1 is None or self.k2 is None else self.k2 - self.k1

    def init(self, model: nn.Module, state: State) -> Carry:
        return ()  # tuple of _Past, oldest first

    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        live = self.trained(model)
        if self.history == 0:
            outputs, new_state = unroll(model, xs, state)
            loss = objective.loss(outputs, targets, start=span.start, total=span.total)
            grads = grads_of(loss, dict(live), objective)
            return RuleStep(grads, detach(new_state), carry, loss.detach(), detach(outputs))

        past: tuple[_Past, ...] = carry
        leaves: dict[str, list[Tensor]] = {n: [p] for n, p in live.items()}
        s = past[0].state if past else state
        i = 0
        while i < len(past):  # re-run remembered steps, grouped by the weights they used
            j = i
            while j < len(past) and past[j].weights is past[i].weights:
                j += 1
            w = {n: v.detach().requires_grad_(True) for n, v in past[i].weights.items()}
            for n, v in w.items():
                leaves[n].append(v)
            seg = torch.stack([p.x for p in past[i:j]])
            _, s = functional_call(_Unroll(model), {f"cell.{n}": v for n, v in w.items()}, (seg, s))
            i = j
        outputs, states = unroll_states(model, xs, s)
        loss = objective.loss(outputs, targets, start=span.start, total=span.total)
        flat = {f"{n}#{k}": t for n, ts in leaves.items() for k, t in enumerate(ts)}
        g = grads_of(loss, flat, objective)
        grads = {
            n: torch.stack([g[f"{n}#{k}"] for k in range(len(ts))]).sum(0)
            for n, ts in leaves.items()
        }

        snapshot = {n: p.detach().clone() for n, p in live.items()}
        befores = [detach(s)] + [detach(st) for st in states[:-1]]
        mine = tuple(_Past(xs[t], befores[t], snapshot) for t in range(xs.shape[0]))
        new_carry = (past + mine)[-self.history :]
        return RuleStep(grads, detach(states[-1]), new_carry, loss.detach(), detach(outputs))
