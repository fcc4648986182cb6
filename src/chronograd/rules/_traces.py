"""Shared machinery of the eligibility-trace rules (D-RTRL, pp-prop): carry, chunk loop, checks.

A rule supplies a per-step callback that updates its traces from a
:class:`~chronograd.traces.TraceStep` and adds to the chunk's gradient; this module runs the
chunk (hoisted input maps once, then one engine step per time step), builds each step's loss
from the objective's window weights (so the per-step losses sum to the chunk's loss), adds the
exact same-step gradients and, once per update, the regularizers' gradient.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from chronograd._tree import tree_leaves, tree_map, tree_stack
from chronograd.cells.base import State, check_cell, param_like
from chronograd.objectives import Objective
from chronograd.rules.base import Grads, RuleStep, penalty_grads
from chronograd.sequence import Span
from chronograd.traces.compile import compile_graph
from chronograd.traces.graph import TraceGraph, TraceStep

_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_GRAPHS: weakref.WeakKeyDictionary[nn.Module, dict[Any, TraceGraph]] = weakref.WeakKeyDictionary()


@dataclass
class TraceCarry:
    """The carry of the trace rules: traces of the current sequence, updated in place.

    Attributes:
        graph: the compiled trace graph (compiled at the first chunk).
        n: steps since the start of the sequence.
        weight: per relation index, the weight trace (D-RTRL: ``(B, I, H, S)``).
        bias: per relation index, the bias trace ``(B, H, S)``.
        neuron: per (parameter, group), the per-neuron trace ``(B, H, S)``.
        ex: per relation index, pp-prop's input trace ``(B, I)``.
        ef: per relation index, pp-prop's output trace ``(B, H, S)``.
    """

    graph: TraceGraph | None = None
    n: int = 0
    weight: dict[int, Tensor] = field(default_factory=dict)
    bias: dict[int, Tensor] = field(default_factory=dict)
    neuron: dict[tuple[str, int], Tensor] = field(default_factory=dict)
    ex: dict[int, Tensor] = field(default_factory=dict)
    ef: dict[int, Tensor] = field(default_factory=dict)


def check_trace_dtype(value: Any) -> torch.dtype | None:
    """``None``, a floating ``torch.dtype`` or its name; raises ``ValueError`` otherwise."""
    if value is None or (isinstance(value, torch.dtype) and value.is_floating_point):
        return value
    if isinstance(value, str) and value in _DTYPES:
        return _DTYPES[value]
    raise ValueError(
        f"trace_dtype must be a floating torch.dtype or one of {sorted(_DTYPES)}, got {value!r}"
    )


def check_chunk(value: Any) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"chunk_size must be a positive int (steps per update), got {value!r}")


def _key(model: nn.Module, x: Tensor, state: State, trained: Sequence[str]) -> Any:
    params = tuple(
        (n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in model.named_parameters()
    )
    leaves = tuple((tuple(t.shape[1:]), t.dtype) for t in tree_leaves(state))
    return (tuple(trained), tuple(x.shape[1:]), x.dtype, x.device.type, leaves, params)


def graph_for(model: nn.Module, x: Tensor, state: State, trained: Sequence[str]) -> TraceGraph:
    """The compiled trace graph of ``model`` (cached per model and input/state signature)."""
    cache = _GRAPHS.setdefault(model, {})
    key = _key(model, x, state, trained)
    if key not in cache:
        cache[key] = compile_graph(model, x, state, trained)
    return cache[key]


def check_trace_model(model: nn.Module, trained: Sequence[str]) -> TraceGraph:
    """Compile the model's trace graph on a random probe input; raises ``TypeError`` if unfit."""
    check_cell(model, "model")
    size = getattr(model, "input_size", None)
    if not isinstance(size, int):
        raise TypeError(
            f"{type(model).__name__} has no integer input_size, so the trace engine cannot probe "
            "it before training; give the cell an input_size attribute"
        )
    device, dtype = param_like(model)
    x = torch.randn(2, size, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    state = model.init_state(2, device=device, dtype=dtype)  # type: ignore[operator]
    return graph_for(model, x, state, trained)


StepFn = Callable[[TraceGraph, TraceStep, TraceCarry, bool, dict[str, Tensor]], None]


def run_chunk(
    model: nn.Module,
    params: dict[str, nn.Parameter],
    xs: Tensor,
    targets: Any,
    state: State,
    carry: TraceCarry,
    objective: Objective,
    span: Span,
    *,
    on_step: StepFn,
    on_end: Callable[[TraceGraph, TraceCarry, dict[str, Tensor]], None] | None = None,
    multi_step: bool = False,
) -> RuleStep:
    """Run one chunk through the trace engine; ``on_step`` turns each step into gradients.

    ``on_step(graph, step, carry, counted, grads)`` updates the traces in ``carry`` and adds to
    ``grads`` (``counted`` is False when the step's loss weight is zero: ``δ`` is zero then).
    """
    T, B = xs.shape[0], xs.shape[1]
    if carry.graph is None:
        carry.graph = graph_for(model, xs[0], state, list(params))
    graph = carry.graph
    chunk = graph.prepare(xs)
    per_leaf = tree_leaves(state)
    ref = per_leaf[0] if per_leaf else xs
    w = objective.weights(
        span.total, B, start=span.start, stop=span.stop, device=xs.device, dtype=ref.dtype
    )
    counted = w.ne(0).any(1).tolist()
    grads: dict[str, Tensor] = {}
    outs: list[Any] = []
    total = torch.zeros((), device=xs.device, dtype=ref.dtype)
    for t in range(T):
        target_t = _at(targets, t)

        def loss(out: Any, t: int = t, target_t: Any = target_t) -> Tensor:
            per = objective.per_sample(tree_map(lambda o: o.unsqueeze(0), out), target_t)
            return (w[t] * per[0]).sum()

        s = graph.step(
            chunk, t, state, loss=loss, multi_step=multi_step, need_loss_signal=counted[t]
        )
        on_step(graph, s, carry, counted[t], grads)
        for k, v in s.exact.items():
            grads[k] = grads[k] + v if k in grads else v
        carry.n += 1
        state = s.state
        outs.append(s.outputs)
        total = total + s.loss  # type: ignore[operator]
    if on_end is not None:
        on_end(graph, carry, grads)
    pen = penalty_grads(objective, dict(params))
    if pen:
        for k, v in pen.items():
            grads[k] = grads[k] + v if k in grads else v
    full: Grads = {
        n: (grads[n] if n in grads else torch.zeros_like(p)).to(p.dtype).reshape(p.shape)
        for n, p in params.items()
    }
    return RuleStep(full, state, carry, total.detach(), tree_stack(outs))


def _at(targets: Any, t: int) -> Any:
    """Step ``t`` of time-first targets, keeping the time axis: ``(1, B, ...)``."""
    return tree_map(lambda y: y[t : t + 1], targets)


def add_grad(grads: dict[str, Tensor], name: str, value: Tensor) -> None:
    """``grads[name] += value`` (creating it)."""
    grads[name] = grads[name] + value if name in grads else value


def neuron_traces(graph: TraceGraph, s: TraceStep, carry: TraceCarry, counted: bool,
                  grads: dict[str, Tensor], dtype: torch.dtype | None) -> None:  # fmt: skip
    """Exact per-neuron traces ``e_t = D_t e_{t-1} + Dp_t`` and their gradient ``Σ δ ⊙ e``."""
    for p in graph.neuron_params:
        for gi in p.groups:
            Dp = s.Dp[(p.name, gi)]
            D = s.D[gi]
            e = carry.neuron.get((p.name, gi))
            if e is None:
                e = carry.neuron[(p.name, gi)] = torch.zeros_like(Dp, dtype=dtype or Dp.dtype)
            if s.delta_prev is not None and counted:
                add_grad(grads, p.name, _reduce(s.delta_prev[gi] * e, p.shared))
            mix_small(e, D, Dp)
            if counted and s.delta is not None:
                add_grad(grads, p.name, _reduce(s.delta[gi] * e, p.shared))


def mix_small(
    e: Tensor, D: Tensor, src: Tensor, scale: float = 1.0, src_scale: float = 1.0
) -> None:
    """In place ``e ← scale · (D e) + src_scale · src`` for ``(B, H, S)`` traces, ``D`` (B,H,S,S)."""
    D = D.to(e.dtype)
    if e.shape[-1] == 1:
        e.mul_(D[..., 0] if scale == 1.0 else D[..., 0] * scale)
    else:
        e.copy_(torch.einsum("bhac,bhc->bha", D, e) * scale)
    e.add_(src.to(e.dtype), alpha=src_scale)


def _reduce(x: Tensor, shared: bool) -> Tensor:
    """``(B, H, S)`` -> a scalar (shared parameter) or ``(H,)``."""
    return x.sum() if shared else x.sum((0, 2))
