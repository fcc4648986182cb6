"""The per-step loop shared by OTTT and SLTT: spatial backpropagation only.

At every step ``t`` of a window the model state is detached, the step is run, and the step's
own weighted loss ``w_t · ℓ_t`` is back-propagated through the layers of that step only (no
path through time). The gradients of the steps are summed, so the graph of one step is freed
before the next one is built: memory is flat in ``T``. What differs between the rules is how a
step is run (OTTT swaps each relation's weight gradient for one built from a presynaptic trace)
and which steps get a graph (SLTT-K). Steps whose loss weight is zero for every sample, and
steps not selected, run without a graph.

**Replay in blocks** (``replay`` given). Since the state entering every step is detached, the
graphs of different steps share nothing, so they need not be built one at a time: the window is
run step by step *without* a graph (the cheap sequential part), the detached state before each
back-propagated step is kept, and every ``block`` such steps are re-run *side by side*, as one
step of batch ``K·B`` (their inputs and states concatenated along the batch), followed by one
backward pass. The gradient is the same sum ``Σ_t ∂(w_t ℓ_t)/∂θ|_{h_{t-1} fixed}`` (up to
rounding); the backward runs as a few large matrix products instead of ``K`` small graphs, and
memory stays flat in ``T`` (``O(block · B)``). A step that draws random numbers would draw
different ones when replayed: the generator's state is watched, and a window whose step
consumes randomness falls back to one graph per step from the first such step on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from chronograd._tree import detach, tree_cat, tree_leaves, tree_map, tree_stack, tree_unflatten
from chronograd.cells.base import State
from chronograd.objectives import Objective
from chronograd.rules.base import Grads, add_grads, penalty_grads
from chronograd.sequence import Span

StepFn = Callable[[Tensor, State, int], tuple[Any, State]]
ReplayFn = Callable[[Tensor, State, list[Any]], tuple[Any, State]]
"""``replay(x (K·B, I), state (K·B, ...), captured) -> (y, new_state)``: ``K`` steps of the
window run side by side as one batch, with a graph; ``captured`` holds what ``capture()``
returned right after each of them ran in sequence (e.g. OTTT's presynaptic traces)."""
Select = Callable[[list[bool]], list[bool]]
SegmentFn = Callable[[Tensor, State], tuple[Any, list[State]]]


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


def check_replay_block(value: Any) -> None:
    """``replay_block`` is ``None`` (one graph per step) or a positive int."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(
            f"replay_block must be a positive int (steps back-propagated together) or None, "
            f"got {value!r}"
        )


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
    replay: ReplayFn | None = None,
    capture: Callable[[], Any] | None = None,
    block: int = 32,
    segment: SegmentFn | None = None,
    replay_all: bool = False,
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
        replay: back-propagate the steps in blocks of ``block`` replayed side by side (see the
            module docstring); ``None``: one graph per step.
        capture: called after each back-propagated step ran in sequence; its results go to
            ``replay`` (default: nothing).
        block: steps per replayed block.
        segment: ``segment(xs (K, B, I), state) -> (ys, [state after each step])``, the
            sequential part of ``block`` steps at once without a graph (e.g. an unroll that
            applies the input map to all ``K`` steps in one product); default: ``step`` in a
            loop. Only with ``replay`` and no ``capture``.
        replay_all: with ``segment``, replay every step of a block, those without a graph
            included (under ``no_grad`` when none has one): for rules whose replay itself
            advances state that every step must see (OTTT's presynaptic traces).
    """
    w = loss_weights(objective, xs, span)  # (L, B)
    counted = (w != 0).any(1).tolist()  # one host sync per window
    graph = counted if select is None else [g and c for g, c in zip(select(counted), counted)]
    if replay is not None:
        if replay_all and (segment is None or capture is not None):
            raise ValueError("replay_all needs a segment function and no capture")
        run = _Replay(step, replay, capture or _nothing, block, segment, replay_all)
        return run(xs, targets, state, objective, params, w, graph)
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
            _accumulate(acc, names, loss_t, params)
            n_graph += 1
        outs.append(detach(y))
    grads = _with_penalty(acc, params, objective)
    return Instantaneous(grads, detach(state), total, tree_stack(outs), n_graph)


def _accumulate(
    acc: dict[str, Tensor], names: list[str], loss: Tensor, params: Mapping[str, Tensor]
) -> None:
    """``acc[n] += ∂loss/∂params[n]`` for every parameter that the loss reaches."""
    gs = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    for n, g in zip(names, gs):
        if g is None:
            continue
        if n in acc:
            acc[n].add_(g)
        else:
            acc[n] = g.clone()


def _with_penalty(
    acc: dict[str, Tensor], params: Mapping[str, Tensor], objective: Objective
) -> Grads:
    """The summed step gradients (zeros where none flowed) plus the regularizers' gradient."""
    grads = {n: acc[n] if n in acc else torch.zeros_like(params[n]) for n in params}
    return add_grads(grads, penalty_grads(objective, dict(params))) or grads


def _rng_state(device: torch.device) -> Tensor:
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()


def _nothing() -> None:
    return None


class _Replay(NamedTuple):
    """The window with its back-propagated steps replayed in blocks (module docstring)."""

    step: StepFn
    replay: ReplayFn
    capture: Callable[[], Any]
    block: int
    segment: SegmentFn | None
    replay_all: bool

    def __call__(
        self,
        xs: Tensor,
        targets: Any,
        state: State,
        objective: Objective,
        params: Mapping[str, Tensor],
        w: Tensor,
        graph: list[bool],
    ) -> Instantaneous:
        names = list(params)
        acc: dict[str, Tensor] = {}
        outs: list[Any] = []
        pending: list[tuple[int, State, Any]] = []  # (step, detached state before it, capture)
        n_graph = 0

        def flush() -> None:
            steps = [t for t, _, _ in pending]
            x = xs[steps].reshape(-1, *xs.shape[2:])  # (K·B, I)
            s = tree_cat([s for _, s, _ in pending])  # (K·B, ...)
            live = [graph[t] for t in steps]
            with torch.set_grad_enabled(any(live)):
                y, _ = self.replay(x, s, [c for _, _, c in pending])
                if any(live):
                    y = tree_map(lambda o: o.reshape(len(steps), -1, *o.shape[1:]), y)
                    per = objective.per_sample(y, tree_map(lambda v: v[steps], targets))  # (K, B)
                    on = torch.tensor(live, device=w.device).unsqueeze(1)  # (K, 1)
                    loss = torch.where(on, w[steps] * per, torch.zeros_like(per)).sum()
                    if loss.requires_grad:
                        _accumulate(acc, names, loss, params)
            pending.clear()

        device, replaying, t = xs.device, True, 0
        while t < xs.shape[0]:
            if replaying and self.segment is not None:  # the next block of steps at once
                stop = min(t + self.block, xs.shape[0])
                before = _rng_state(device)
                with torch.no_grad():
                    ys, states = self.segment(xs[t:stop], detach(state))
                if not torch.equal(before, _rng_state(device)):
                    replaying = False
                    _set_rng_state(device, before)
                    continue
                for i, s_in in enumerate([detach(state), *states[:-1]]):
                    if graph[t + i] or self.replay_all:
                        pending.append((t + i, s_in, None))
                    n_graph += graph[t + i]
                if pending:
                    flush()
                outs.extend(ys.unbind(0) if isinstance(ys, Tensor) else _unstack(ys))
                state, t = states[-1], stop
                continue
            s_in = detach(state)
            if replaying:
                before = _rng_state(device)
                with torch.no_grad():
                    y, new = self.step(xs[t], s_in, t)
                if not torch.equal(before, _rng_state(device)):  # the step draws random numbers:
                    replaying = False  # one graph per step from here on, the draw not repeated
                    _set_rng_state(device, before)
                    continue
                if graph[t]:
                    pending.append((t, s_in, self.capture()))
            else:
                with torch.set_grad_enabled(graph[t]):
                    y, new = self.step(xs[t], s_in, t)
                    if graph[t]:
                        per = objective.per_sample(
                            tree_map(lambda o: o.unsqueeze(0), y), tree_map(_at(t), targets)
                        )  # (1, B)
                        loss_t = (w[t] * per[0]).sum()
                if graph[t] and loss_t.requires_grad:
                    _accumulate(acc, names, loss_t, params)
            n_graph += graph[t]
            if len(pending) == self.block or (pending and not replaying):
                flush()
            outs.append(detach(y))
            state, t = new, t + 1
        if pending:
            flush()
        outputs = tree_stack(outs)
        with torch.no_grad():
            per = objective.per_sample(outputs, targets)  # (L, B)
            total = torch.where(w != 0, w * per, torch.zeros_like(per)).sum()
        grads = _with_penalty(acc, params, objective)
        return Instantaneous(grads, detach(state), total, outputs, n_graph)


def _unstack(tree: Any) -> list[Any]:
    """The per-step trees of a tree of time-first tensors."""
    leaves = tree_leaves(tree)
    return [tree_unflatten(tree, [leaf[t] for leaf in leaves]) for t in range(leaves[0].shape[0])]


def _set_rng_state(device: torch.device, rng: Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(rng, device)
    else:
        torch.set_rng_state(rng)
