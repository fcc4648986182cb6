"""Backpropagation through time.

Autograd through the unrolled graph of the whole sequence (``chunk_size = None``). The input
map of hoisted cells is applied to all ``T`` steps as one matmul. ``checkpoint=k`` recomputes
activations in segments of ``k`` steps during the backward pass (memory ``O(T/k + k)`` steps of
activations for one extra forward pass; ``k ≈ √T`` gives ``O(√T)``).

Werbos (1990), "Backpropagation through time: what it does and how to do it".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

from torch import nn

from chronograd._tree import detach
from chronograd.cells.base import State
from chronograd.objectives import Objective
from chronograd.rules.base import Carry, Chunk, LearningRule, RuleStep, grads_of
from chronograd.sequence import unroll


@final
@dataclass(frozen=True)
class BPTT(LearningRule):
    """Exact gradient of the whole-sequence loss by reverse-mode autodiff.

    Args:
        checkpoint: activation checkpointing over time segments of this many steps (None: off).
        (plus the options shared by every rule, see :class:`LearningRule`)
    """

    checkpoint: int | None = None

    def _check(self) -> None:
        if self.checkpoint is not None and (
            not isinstance(self.checkpoint, int) or self.checkpoint < 1
        ):
            raise ValueError(
                f"checkpoint must be a positive number of steps, got {self.checkpoint!r}"
            )

    @property
    def chunk_size(self) -> int | None:
        return None

    def init(self, model: nn.Module, state: State) -> Carry:
        return ()

    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        params = self.trained(model)
        outputs, new_state = unroll(model, xs, state, checkpoint=self.checkpoint)
        loss = objective.loss(outputs, targets, start=span.start, total=span.total)
        grads = grads_of(loss, dict(params), objective)
        return RuleStep(grads, detach(new_state), carry, loss.detach(), detach(outputs))
