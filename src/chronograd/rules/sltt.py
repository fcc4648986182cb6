"""Spatial learning through time, SLTT and SLTT-K (Meng et al., ICCV 2023).

SLTT drops the temporal paths of BPTT: at every step the state is detached and the step's loss
``w_t ℓ_t`` is back-propagated through the layers of that step only, so each relation gets the
instantaneous presynaptic input::

    ∇W_l += δ_{l,t}ᵀ s_{l-1,t}        δ_{l,t} = ∂(w_t ℓ_t)/∂u_{l,t} through step t only

(autograd of the step with the state detached computes exactly this). Memory is flat in ``T``.
With ``chunk_size=1`` (one update per step, each step's loss its own window) it is TBPTT(1).

SLTT-K (``k=K``) back-propagates at only ``K`` steps per sequence, drawn uniformly without
replacement among the steps that carry loss (``K <= T``, checked at a sequence's first
chunk), from a seeded generator kept in the carry (so a
run is reproducible and a checkpoint resumes the same draws); the other steps run without a
graph. The gradient is the plain sum over the chosen steps (no ``T/K`` rescaling).

The back-propagated steps are replayed side by side in blocks of ``replay_block`` steps, one
backward pass per block (:mod:`chronograd.traces.instantaneous`): the same gradient, computed
as a few large matrix products; ``replay_block=None`` runs one graph per step.

Meng, Xiao, Yan, Wang, Lin, Luo: "Towards Memory- and Time-Efficient Backpropagation for
Training Spiking Neural Networks", ICCV 2023.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, final

import torch
from torch import Tensor, nn

from chronograd.cells.base import State
from chronograd.objectives import Objective
from chronograd.rules.base import (
    Carry,
    Chunk,
    LearningRule,
    PersistentCarry,
    RuleStep,
    check_chunk_size,
)
from chronograd.sequence import unroll_states
from chronograd.traces.instantaneous import check_replay_block, instantaneous_window


class SLTTCarry(NamedTuple):
    """SLTT's carry.

    Attributes:
        rng: state of SLTT-K's step generator (``None`` for plain SLTT); persists.
        graph_steps: steps back-propagated so far in this sequence.
    """

    rng: Tensor | None
    graph_steps: int


@final
@dataclass(frozen=True)
class SLTT(LearningRule, PersistentCarry):
    """Spatial learning through time; ``k=K`` gives SLTT-K.

    Args:
        k: back-propagate at ``K`` randomly chosen steps per sequence (``None``: every step).
        chunk_size: steps per update: ``1`` (online), ``k``, or ``None`` (default: one update
            per sequence; the only choice with ``k``).
        seed: seed of SLTT-K's step generator.
        replay_block: steps back-propagated together as one batch (memory ``O(replay_block ·
            B)``, flat in ``T``); ``None``: one graph per step.
        (plus the options shared by every rule, see :class:`LearningRule`)
    """

    k: int | None = None
    chunk_size: int | None = None
    seed: int = 0
    replay_block: int | None = 32

    def _check(self) -> None:
        check_replay_block(self.replay_block)
        if self.k is not None and (
            not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1
        ):
            raise ValueError(f"k must be a positive int (steps with a graph), got {self.k!r}")
        check_chunk_size(self.chunk_size)
        if self.k is not None and self.chunk_size is not None:
            raise ValueError(
                "SLTT(k=...) draws its K steps per sequence and applies one update per sequence; "
                f"chunk_size={self.chunk_size} would apply zero updates at the other steps (which "
                "still move momentum optimizers). Use SLTT(k=K) or SLTT(chunk_size=...)"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"seed must be an int, got {self.seed!r}")

    def init(self, model: nn.Module, state: State) -> Carry:
        if self.k is None:
            return SLTTCarry(None, 0)
        g = torch.Generator(device="cpu")
        g.manual_seed(self.seed)
        return SLTTCarry(g.get_state(), 0)

    def start_sequence(self, model: nn.Module, state: State, carry: Carry) -> Carry:
        c: SLTTCarry = carry
        return SLTTCarry(c.rng, 0)

    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        c: SLTTCarry = carry
        if self.k is not None and span.start == 0 and self.k > span.total:
            raise ValueError(
                f"SLTT(k={self.k}) back-propagates at k steps per sequence, but this sequence "
                f"has T={span.total} steps; use k <= {span.total} (k=None back-propagates at "
                "every step)"
            )
        rng = c.rng
        select = None
        if self.k is not None:
            g = torch.Generator(device="cpu")
            assert rng is not None
            g.set_state(rng)
            k = self.k

            def select(counted: list[bool]) -> list[bool]:
                steps = [t for t, on in enumerate(counted) if on]
                chosen = {steps[i] for i in torch.randperm(len(steps), generator=g)[:k].tolist()}
                return [t in chosen for t in range(len(counted))]

        def step(x: Tensor, s: State, t: int) -> tuple[Any, State]:
            out: tuple[Any, State] = model(x, s)
            return out

        def replay(x: Tensor, s: State, captured: list[Any]) -> tuple[Any, State]:
            out: tuple[Any, State] = model(x, s)
            return out

        live = dict(self.trained(model))
        r = instantaneous_window(
            step, xs, targets, state, objective, span, live, select,
            replay=None if self.replay_block is None else replay, block=self.replay_block or 1,
            segment=lambda x, s: unroll_states(model, x, s),
        )  # fmt: skip
        if self.k is not None:
            rng = g.get_state()
        new = SLTTCarry(rng, c.graph_steps + r.graph_steps)
        return RuleStep(r.grads, r.state, new, r.loss, r.outputs)

    def carry_state_dict(self, carry: Carry) -> dict[str, Any] | None:
        c: SLTTCarry = carry
        return None if c.rng is None else {"rng": c.rng.clone()}

    def load_carry_state_dict(self, model: nn.Module, state: dict[str, Any]) -> Carry:
        if self.k is None:
            raise ValueError("plain SLTT keeps nothing across sequences; there is no carry to load")
        return SLTTCarry(state["rng"].clone(), 0)
