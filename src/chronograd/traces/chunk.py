"""The chunk loop and carry of the eligibility-trace rules (D-RTRL, pp-prop), and their checks.

A rule supplies a per-block callback that updates its traces from a
:class:`~chronograd.traces.TraceBlock` and adds to the chunk's gradient; :func:`run_chunk` runs
the chunk (hoisted input maps once, then engine blocks of up to :data:`BLOCK` steps), builds
each block's loss from the objective's window weights (so the blocks' losses sum to the chunk's
loss), adds the exact same-step gradients and, once per update, the regularizers' gradient::

    L_chunk = Σ_blocks Σ_{k ∈ block} w_k · ℓ_k

Blocks change nothing in the mathematics: every trace recursion is still per step
(:mod:`chronograd.traces.recursion`). :class:`TraceCarry` is immutable: a chunk returns a new
carry. :func:`neuron_traces` and :func:`bias_traces` are the exact per-neuron and bias traces
``e_t = D_t e_{t-1} + Dp_t`` (``Df_t`` for a bias) with gradient ``Σ_t <δ_t, e_t>`` (plus
``<δ^prev_t, e_{t-1}>`` in previous-state mode).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from chronograd._tree import tree_cat, tree_leaves, tree_map, tree_unflatten
from chronograd.cells.base import State, check_cell, param_like
from chronograd.objectives import Objective
from chronograd.rules.base import Grads, RuleStep, penalty_grads
from chronograd.sequence import Span
from chronograd.traces.compile import compile_graph
from chronograd.traces.graph import TraceGraph
from chronograd.traces.recursion import small_traces
from chronograd.traces.structure import TraceBlock, add_into

_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_GRAPHS: weakref.WeakKeyDictionary[nn.Module, dict[Any, TraceGraph]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class TraceCarry:
    """The carry of the trace rules: the traces of the current sequence.

    Immutable: :func:`run_chunk` returns a new carry (``n`` advanced, the graph set, fresh
    dictionaries holding the traces). The trace tensors themselves are advanced in place by
    the block callbacks (the engine's performance choice: a ``(S, B, I, H)`` trace is not
    copied at every block), so a carry is consumed by the chunk it is passed to.

    Attributes:
        graph: the compiled trace graph (compiled at the first chunk).
        n: steps since the start of the sequence.
        weight: per relation index, the D-RTRL weight trace ``(S, B, I, H)``.
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


def trace_dtype_of(rule: Any) -> torch.dtype | None:
    """A trace rule's ``trace_dtype`` as its ``_check`` left it (:func:`check_trace_dtype`):
    a ``torch.dtype``, or ``None`` for the dtype of the state."""
    value = rule.trace_dtype
    return value if isinstance(value, torch.dtype) else None


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


BLOCK = 32  # steps per engine block: one loss evaluation and one backward pass per block
BlockFn = Callable[[TraceGraph, TraceBlock, "TraceCarry", dict[str, Tensor]], None]


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
    on_block: BlockFn,
    multi_step: bool = False,
    readout: tuple[int, int] | None = None,
) -> RuleStep:
    """Run one chunk through the trace engine, in blocks; ``on_block`` turns each into gradients.

    ``on_block(graph, block, carry, grads)`` advances the traces held in ``carry``'s
    dictionaries (creating missing ones; ``carry.n`` is the number of steps before the block)
    and adds to ``grads``. The chunk works on its own copies of the dictionaries and returns a
    new carry with them; the carry passed in is not modified (its trace tensors are advanced
    in place). Each block's loss is ``Σ_k w_k · ℓ_k`` with the objective's window weights
    ``w``, so the blocks' losses sum to the chunk's loss; a block whose weights are all zero
    skips the learning signal.
    ``readout``: passed to :meth:`TraceGraph.run` (D-RTRL's ``readout="filter"``).
    """
    T = xs.shape[0]
    carry, w = begin_chunk(model, xs, state, carry, objective, span, params)
    graph = carry.graph
    assert graph is not None  # compiled by begin_chunk
    grads: dict[str, Tensor] = {}
    outs: list[Any] = []
    total = torch.zeros((), device=xs.device, dtype=w.dtype)
    for b0 in range(0, T, BLOCK):
        b1 = min(T, b0 + BLOCK)
        wb = w[b0:b1]
        tb = time_slice(targets, b0, b1)

        def loss(out: Any, wb: Tensor = wb, tb: Any = tb) -> Tensor:
            return (wb * objective.per_sample(out, tb)).sum()

        chunk = graph.prepare(xs[b0:b1])  # hoisted input maps per block: memory flat in T
        blk = graph.run(
            chunk, 0, b1 - b0, state, loss=loss, learning_signal=bool(wb.ne(0).any()),
            multi_step=multi_step, readout=readout,
        )  # fmt: skip
        on_block(graph, blk, carry, grads)
        add_into(grads, blk.exact)
        carry = replace(carry, n=carry.n + b1 - b0)
        state = blk.state
        outs.append(blk.outputs)
        total = total + blk.loss  # type: ignore[operator]
    pen = penalty_grads(objective, dict(params))
    if pen:
        add_into(grads, pen)
    full: Grads = {
        n: (grads[n] if n in grads else torch.zeros_like(p)).to(p.dtype).reshape(p.shape)
        for n, p in params.items()
    }
    return RuleStep(full, state, carry, total.detach(), tree_cat(outs))


def time_slice(tree: Any, start: int, stop: int) -> Any:
    """Steps ``[start, stop)`` of time-first tensors (a tensor or a tree of them)."""

    def cut(y: Tensor) -> Tensor:
        return y[start:stop]

    return tree_map(cut, tree)


def add_grad(grads: dict[str, Tensor], name: str, value: Tensor) -> None:
    """``grads[name] += value`` (creating it)."""
    grads[name] = grads[name] + value if name in grads else value


def signal_grad(blk: TraceBlock, gi: int, hist: Tensor) -> Tensor | None:
    """``Σ_k <δ_k, e_k> + <δ^prev_k, e_{k-1}>`` per ``(B, H, S)`` element, for a trace history.

    Returns ``(B, H, S)`` summed over the block's steps, or None when there is no signal.
    """
    out: Tensor | None = None
    if blk.delta is not None:
        out = (blk.delta[gi].to(hist.dtype) * hist[1:]).sum(0)
    if blk.delta_prev is not None:
        prev = (blk.delta_prev[gi].to(hist.dtype) * hist[:-1]).sum(0)
        out = prev if out is None else out + prev
    return out


def neuron_traces(
    graph: TraceGraph,
    blk: TraceBlock,
    carry: TraceCarry,
    grads: dict[str, Tensor],
    dtype: torch.dtype | None,
) -> None:
    """Exact per-neuron traces ``e_t = D_t e_{t-1} + Dp_t`` and their gradient ``Σ δ ⊙ e``."""
    for p in graph.neuron_params:
        for gi in p.groups:
            Dp = blk.Dp[(p.name, gi)]
            e = carry.neuron.get((p.name, gi))
            if e is None:
                e = carry.neuron[(p.name, gi)] = torch.zeros_like(Dp[0], dtype=dtype or Dp.dtype)
            g = signal_grad(blk, gi, small_traces(e, blk.D[gi], Dp))
            if g is not None:
                add_grad(grads, p.name, g.sum() if p.shared else g.sum((0, 2)))


def bias_traces(
    graph: TraceGraph,
    blk: TraceBlock,
    carry: TraceCarry,
    grads: dict[str, Tensor],
    dtype: torch.dtype | None,
) -> None:
    """Exact bias traces ``eb_t = D_t eb_{t-1} + Df_t`` of every trained state relation."""
    for i, r in enumerate(graph.relations):
        if r.group is None or r.bias is None or r.bias not in graph.trained:
            continue
        Df = blk.Df[i]
        assert Df is not None
        eb = carry.bias.get(i)
        if eb is None:
            eb = carry.bias[i] = torch.zeros_like(Df[0], dtype=dtype or Df.dtype)
        g = signal_grad(blk, r.group, small_traces(eb, blk.D[r.group], Df))
        if g is not None:
            add_grad(grads, r.bias, g.sum((0, 2)))


class StepLoss(NamedTuple):
    """One step run from a state whose leaves require grad (see :func:`step_loss`)."""

    output: Any
    state: State
    loss: Tensor
    state_leaves: list[Tensor]


def step_loss(
    model: nn.Module,
    x: Tensor,
    state: State,
    leaves: list[Tensor],
    targets: Any,
    t: int,
    weight: Tensor,
    objective: Objective,
) -> StepLoss:
    """Step ``t`` of a chunk with a graph to the parameters and to the state entering it.

    ``leaves``: the detached leaves of ``state``; fresh copies that require grad enter the step,
    so ``∂ℓ_t/∂h_{t-1}`` is available. ``weight``: the step's loss weights ``w_t`` ``(B,)``;
    the loss is ``Σ_b w_tb ℓ_tb`` (the objective's per-sample loss at step ``t``). Used by the
    influence-matrix rules (SnAp, UORO, KF-RTRL).
    """
    h_req = [leaf.clone().requires_grad_(True) for leaf in leaves]
    with torch.enable_grad():
        out, new_state = model(x, tree_unflatten(state, h_req))
        per = objective.per_sample(
            tree_map(lambda v: v.unsqueeze(0), out), time_slice(targets, t, t + 1)
        )
        loss = (weight * per[0]).sum()
    return StepLoss(out, new_state, loss, h_req)


def begin_chunk(
    model: nn.Module,
    xs: Tensor,
    state: State,
    carry: TraceCarry,
    objective: Objective,
    span: Span,
    params: dict[str, Any],
) -> tuple[TraceCarry, Tensor]:
    """The chunk's own copy of ``carry`` (its graph compiled at the first chunk) and the
    objective's loss weights ``w`` ``(T_c, B)`` of the chunk, in the state's dtype."""
    graph = carry.graph if carry.graph is not None else graph_for(model, xs[0], state, list(params))
    carry = replace(
        carry, graph=graph, weight=dict(carry.weight), bias=dict(carry.bias),
        neuron=dict(carry.neuron), ex=dict(carry.ex), ef=dict(carry.ef),
    )  # fmt: skip
    leaves = tree_leaves(state)
    ref = leaves[0] if leaves else xs
    w = objective.weights(
        span.total, xs.shape[1], start=span.start, stop=span.stop, device=xs.device,
        dtype=ref.dtype,
    )  # fmt: skip
    return carry, w
