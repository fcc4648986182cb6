"""The per-step loop shared by OTTT and SLTT: spatial backpropagation only.

At every step ``t`` of a window the model state is detached, the step is run, and the step's
own weighted loss ``w_t · ℓ_t`` is back-propagated through the layers of that step only (no
path through time). The gradients of the steps are summed, so the graph of one step is freed
before the next one is built: memory is flat in ``T``. What differs between the rules is how a
step is run (OTTT swaps each relation's weight gradient for one built from a presynaptic trace)
and which steps get a graph (SLTT-K). Steps whose loss weight is zero for every sample, and
steps not selected, run without a graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from chronograd._tree import detach, tree_map, tree_stack
from chronograd.cells.base import State
from chronograd.objectives import Objective
from chronograd.rules.base import Grads, add_grads, penalty_grads
from chronograd.sequence import Span

StepFn = Callable[[Tensor, State, int], tuple[Any, State]]
Select = Callable[[list[bool]], list[bool]]


class Instantaneous(NamedTuple):
    """Result of :func:`instantaneous_window`.

    Attributes:
        grads: summed gradients of the window (plus the regularizers' gradient, once).
        state: detached state after the window.
        loss: detached window loss (sum of the weighted step losses).
        outputs: detached outputs ``(L, B, ...)``.
        graph_steps: how many steps were back-propagated.
    """

    grads: Grads
    state: State
    loss: Tensor
    outputs: Any
    graph_steps: int


def _at(t: int) -> Callable[[Tensor], Tensor]:
    """``v -> v[t:t+1]`` (one step of a time-first tensor, time axis kept)."""
    return lambda v: v[t : t + 1]


def loss_weights(objective: Objective, xs: Tensor, span: Span) -> Tensor:
    """The objective's loss weights of the window, ``(L, B)``, in a floating dtype."""
    dtype = xs.dtype if xs.is_floating_point() else torch.get_default_dtype()
    return objective.weights(
        span.total, xs.shape[1], start=span.start, stop=span.stop, device=xs.device, dtype=dtype
    )


def instantaneous_window(
    step: StepFn,
    xs: Tensor,
    targets: Any,
    state: State,
    objective: Objective,
    span: Span,
    params: Mapping[str, Tensor],
    select: Select | None = None,
) -> Instantaneous:
    """Run ``step`` over the window, back-propagating each step's loss through that step only.

    Args:
        step: ``step(x_t (B, I), detached_state, t) -> (y_t, new_state)``.
        xs: ``(L, B, I)`` inputs of the window; targets: time-first targets of the window.
        state: state before the window.
        objective: gives the step weights ``w_t`` (:meth:`Objective.weights` over the window),
            so the step losses sum to the window loss.
        span: where the window lies in the sequence.
        params: ``{name: tensor}`` to differentiate.
        select: ``select(counted) -> graph`` picks the steps that get a graph among those
            carrying loss (``counted[t]``); default: all of them.
    """
    w = loss_weights(objective, xs, span)  # (L, B)
    counted = (w != 0).any(1).tolist()  # one host sync per window
    graph = counted if select is None else [g and c for g, c in zip(select(counted), counted)]
    names = list(params)
    acc: dict[str, Tensor] = {}
    outs: list[Any] = []
    total = torch.zeros((), device=w.device, dtype=w.dtype)
    n_graph = 0
    for t in range(xs.shape[0]):
        with torch.set_grad_enabled(graph[t]):
            y, state = step(xs[t], detach(state), t)
            if counted[t]:
                per = objective.per_sample(
                    tree_map(lambda o: o.unsqueeze(0), y), tree_map(_at(t), targets)
                )  # (1, B)
                loss_t = (w[t] * per[0]).sum()
                total = total + loss_t.detach()
        if graph[t] and loss_t.requires_grad:
            gs = torch.autograd.grad(loss_t, [params[n] for n in names], allow_unused=True)
            for n, g in zip(names, gs):
                if g is None:
                    continue
                if n in acc:
                    acc[n].add_(g)
                else:
                    acc[n] = g.clone()
            n_graph += 1
        outs.append(detach(y))
    grads = {n: acc[n] if n in acc else torch.zeros_like(params[n]) for n in names}
    grads = add_grads(grads, penalty_grads(objective, dict(params))) or grads
    return Instantaneous(grads, detach(state), total, tree_stack(outs), n_graph)
