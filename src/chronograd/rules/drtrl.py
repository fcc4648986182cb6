"""D-RTRL: diagonal real-time recurrent learning (braintrace's ``ParamDimVjpAlgorithm``).

For every relation ``y = W z + b`` feeding a hidden group with ``S`` state variables per neuron,
and with ``D_t`` (B, H, S, S), ``Df_t`` (B, H, S) from the trace engine
(:mod:`chronograd.traces`), the traces (zero at the start of each sequence, per sample) are::

    eW_t[b,i,h,a] = Σ_c D_t[b,h,a,c] eW_{t-1}[b,i,h,c] + z_t[b,i] Df_t[b,h,a]
    eb_t[b,h,a]   = Σ_c D_t[b,h,a,c] eb_{t-1}[b,h,c]   + Df_t[b,h,a]

and the gradient is ``gW[h,i] += Σ_{b,a} δ_t[b,h,a] eW_t[b,i,h,a]`` (``gb`` likewise), with
``δ_t = ∂ℓ_t/∂h_t`` partial within a neuron and total across groups. ``mode="previous-state"``
also adds ``Σ_a δ^prev_t[b,h,a] eW_{t-1}[b,i,h,a]``, ``δ^prev_t`` the part of ``∂ℓ_t/∂h_{t-1}``
that avoids ``h_t`` (non-zero only when a cell's output at ``t`` is computed from the previous
state; elsewhere it equals single-step bit for bit).

``mode="multi-step"`` with ``window=k`` is braintrace's multi-step
(:mod:`chronograd.traces.window`): inside windows of ``k`` steps the ordinary reverse-mode
gradient of every parameter, and the traces enter only at a window's entry::

    ∇θ += ∂L_w/∂θ |_{h_entry fixed} + contract(∂L_w/∂h_entry, ε_entry)

with ``∂L_w/∂h_entry`` through the full steps (recurrent weights included) and ``ε`` the
traces above. One window over the sequence is BPTT; it is closer to BPTT than single-step on
recurrent models, at the cost of a reverse pass over each window (memory ``O(k)`` steps).
Per-neuron parameters (``(H,)`` or scalar) get exact traces ``e = D e + Dp``; output-only
parameters their exact same-step gradient. Memory ``O(B·|θ|·S)``, flat in ``T``.

D-RTRL keeps each neuron's own block of ``∂h_t/∂h_{t-1}`` and drops the rest: it is exact
(equal to BPTT) when the recurrence is element-wise (no recurrent weights: leaky integrators,
LIF/ALIF/two-state LIF without ``W_rec``, the diagonal cells), and equals exact RTRL whenever
the Jacobian is block-diagonal. Memory that lives in *another* group (a leaky readout, κ > 0,
or a second stateful layer) is not propagated into upstream traces by default
(``readout="state"``); the readout's and the later layer's own weights stay exact.
``readout="filter"`` handles a final ``LeakyReadout`` exactly for the layer feeding it: that
layer's traces are filtered with ``κ`` and contracted with ``W_outᵀ ∂ℓ_t/∂y_t``
(:mod:`chronograd.traces.readout_filter`), which is e-prop's ``F_κ`` for any hidden cell: on
LIF/ALIF it equals symmetric e-prop (:class:`~chronograd.rules.EProp`).

Implementation: the engine hands over blocks of up to 32 steps; the weight traces are then
advanced once per block by an exact regrouping of the recursion
(:func:`chronograd.traces.recursion.advance`: an adjoint
recursion over the block's ``S``-vectors, one batched matmul, one pass over the trace), so a
``(S, B, I, H)`` trace is read and written once per block rather than once per step.

Menick et al. (2021), "Practical real time recurrent learning with a sparse approximation"
(SnAp-1 keeps the same diagonal); Murray (2019), "Local online learning in recurrent networks
with random feedback" (RFLO); braintrace (github.com/chaobrain/braintrace), ``D_RTRL``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, final

import torch
from torch import Tensor, nn

from chronograd.cells.base import State
from chronograd.objectives import Objective
from chronograd.rules.base import Carry, Chunk, LearningRule, RuleStep, check_chunk_size
from chronograd.traces.chunk import (
    TraceCarry,
    add_grad,
    bias_traces,
    check_trace_dtype,
    check_trace_model,
    graph_for,
    neuron_traces,
    run_chunk,
    trace_dtype_of,
)
from chronograd.traces.graph import TraceGraph
from chronograd.traces.readout_filter import check_filter_model, filter_block, filter_target
from chronograd.traces.recursion import advance
from chronograd.traces.structure import TraceBlock
from chronograd.traces.window import check_mode, contract_drtrl, run_windows


@final
@dataclass(frozen=True)
class DRTRL(LearningRule):
    """Diagonal RTRL with per-sample eligibility traces (see the module docstring).

    Args:
        mode: ``"single-step"`` (``δ_t = ∂ℓ_t/∂h_t``), ``"previous-state"`` (adds ``δ^prev``)
            or ``"multi-step"`` (reverse mode inside windows of ``window`` steps, traces across).
        window: steps per window in ``"multi-step"`` mode (windows start at multiples of
            ``window`` from the sequence start and end at chunk boundaries).
        chunk_size: steps per update (``None``: one update per sequence); the traces are
            carried across the chunks of a sequence and reset at its start.
        trace_dtype: dtype of the traces (default: the state's).
        readout: ``"state"`` (default: a leaky readout is a hidden group like any other, its
            memory not propagated upstream) or ``"filter"`` (a final ``LeakyReadout`` with
            ``κ > 0`` handled exactly for the layer feeding it, e-prop's ``F_κ``; the model
            must be a Stack ending in a LeakyReadout fed directly by a stateful cell).
        (plus the options shared by every rule, see :class:`LearningRule`)
    """

    mode: Literal["single-step", "previous-state", "multi-step"] = "single-step"
    chunk_size: int | None = None
    trace_dtype: torch.dtype | str | None = None
    readout: Literal["state", "filter"] = "state"
    window: int = 1

    def _check(self) -> None:
        check_mode(self.mode, self.window, ("single-step", "previous-state", "multi-step"))
        if self.mode == "multi-step" and self.readout == "filter":
            raise ValueError("readout='filter' must use mode 'single-step' or 'previous-state'")
        if self.readout not in ("state", "filter"):
            raise ValueError(f"readout must be 'state' or 'filter', got {self.readout!r}")
        check_chunk_size(self.chunk_size)
        object.__setattr__(self, "trace_dtype", check_trace_dtype(self.trace_dtype))

    def check_model(self, model: nn.Module) -> None:
        if self.readout == "filter":
            check_filter_model(model)
        check_trace_model(model, list(self.trained(model)))

    def init(self, model: nn.Module, state: State) -> Carry:
        self.check_model(model)
        return TraceCarry()

    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        dtype = trace_dtype_of(self)
        params = self.trained(model)
        target = None
        if self.readout == "filter":
            if carry.graph is None:
                carry = replace(carry, graph=graph_for(model, xs[0], state, list(params)))
            target = filter_target(model, carry.graph)

        def on_block(graph: TraceGraph, blk: TraceBlock, c: TraceCarry,
                     grads: dict[str, Tensor]) -> None:  # fmt: skip
            if target is not None:
                blk = filter_block(graph, blk, target)
            weight_traces(graph, blk, c, grads, dtype)
            bias_traces(graph, blk, c, grads, dtype)
            neuron_traces(graph, blk, c, grads, dtype)

        if self.mode == "multi-step":
            return run_windows(
                model, params, xs, targets, state, carry, objective, span,
                window=self.window, contract=contract_drtrl, on_block=on_block,
            )  # fmt: skip
        return run_chunk(
            model, params, xs, targets, state, carry, objective, span,
            on_block=on_block, multi_step=self.mode == "previous-state",
            readout=None if target is None else (target.relation, target.group),
        )  # fmt: skip


def weight_traces(
    graph: TraceGraph,
    blk: TraceBlock,
    carry: TraceCarry,
    grads: dict[str, Tensor],
    dtype: torch.dtype | None,
) -> None:
    """Advance every trained relation's weight trace over the block and add its gradient."""
    for i, r in enumerate(graph.relations):
        if r.group is None or r.weight not in graph.trained:
            continue
        z, Df = blk.inputs[i], blk.Df[i]
        assert z is not None and Df is not None
        e = carry.weight.get(i)
        fresh = e is None
        if e is None:  # written in full by the first advance (no zero fill)
            _, B, H, S = Df.shape
            e = carry.weight[i] = Df.new_empty(S, B, z.shape[-1], H, dtype=dtype or Df.dtype)
        delta = None if blk.delta is None else blk.delta[r.group]
        prev = None if blk.delta_prev is None else blk.delta_prev[r.group]
        g = advance(e, z, blk.D[r.group], Df, delta, prev, fresh)
        if g is not None:
            add_grad(grads, r.weight, g.t() if r.form == "linear" else g)
