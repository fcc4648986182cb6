"""D-RTRL: diagonal real-time recurrent learning (braintrace's ``ParamDimVjpAlgorithm``).

For every relation ``y = W z + b`` feeding a hidden group with ``S`` state variables per neuron,
and with ``D_t`` (B, H, S, S), ``Df_t`` (B, H, S) from the trace engine
(:mod:`chronograd.traces`), the traces (zero at the start of each sequence, per sample) are::

    eW_t[b,i,h,a] = Σ_c D_t[b,h,a,c] eW_{t-1}[b,i,h,c] + z_t[b,i] Df_t[b,h,a]
    eb_t[b,h,a]   = Σ_c D_t[b,h,a,c] eb_{t-1}[b,h,c]   + Df_t[b,h,a]

and the gradient is ``gW[h,i] += Σ_{b,a} δ_t[b,h,a] eW_t[b,i,h,a]`` (``gb`` likewise), with
``δ_t = ∂ℓ_t/∂h_t`` partial within a neuron and total across groups. ``mode="multi-step"`` also
adds ``Σ_a δ^prev_t[b,h,a] eW_{t-1}[b,i,h,a]``, ``δ^prev_t`` the part of ``∂ℓ_t/∂h_{t-1}`` that
avoids ``h_t`` (non-zero when a cell's output at ``t`` is computed from the previous state).
Per-neuron parameters (``(H,)`` or scalar) get exact traces ``e = D e + Dp``; output-only
parameters their exact same-step gradient. Memory ``O(B·|θ|·S)``, flat in ``T``.

D-RTRL keeps each neuron's own block of ``∂h_t/∂h_{t-1}`` and drops the rest: it is exact
(equal to BPTT) when the recurrence is element-wise (no recurrent weights: leaky integrators,
LIF/ALIF/two-state LIF without ``W_rec``, the diagonal cells), and equals exact RTRL whenever
the Jacobian is block-diagonal. Memory that lives in *another* group (a leaky readout, κ > 0)
is not propagated into upstream traces (e-prop's ``F_κ`` filtering is not applied); the
readout's own weights stay exact.

Menick et al. (2021), "Practical real time recurrent learning with a sparse approximation"
(SnAp-1 keeps the same diagonal); Murray (2019), "Local online learning in recurrent networks
with random feedback" (RFLO); braintrace (github.com/chaobrain/braintrace), ``D_RTRL``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, final

import torch
from torch import Tensor, nn

from chronograd.cells.base import State
from chronograd.objectives import Objective
from chronograd.rules._traces import (
    TraceCarry,
    add_grad,
    check_chunk,
    check_trace_dtype,
    check_trace_model,
    mix_small,
    neuron_traces,
    run_chunk,
)
from chronograd.rules.base import Carry, LearningRule, RuleStep
from chronograd.sequence import Span
from chronograd.traces.graph import TraceGraph, TraceStep


@final
@dataclass(frozen=True)
class DRTRL(LearningRule):
    """Diagonal RTRL with per-sample eligibility traces (see the module docstring).

    Args:
        mode: ``"single-step"`` (``δ_t = ∂ℓ_t/∂h_t``) or ``"multi-step"`` (adds ``δ^prev``).
        chunk_size: steps per update (``None``: one update per sequence); the traces are
            carried across the chunks of a sequence and reset at its start.
        trace_dtype: dtype of the traces (default: the state's).
        (plus the options shared by every rule, see :class:`LearningRule`)
    """

    mode: Literal["single-step", "multi-step"] = "single-step"
    chunk_size: int | None = None
    trace_dtype: torch.dtype | str | None = None

    def _check(self) -> None:
        if self.mode not in ("single-step", "multi-step"):
            raise ValueError(f"mode must be 'single-step' or 'multi-step', got {self.mode!r}")
        check_chunk(self.chunk_size)
        object.__setattr__(self, "trace_dtype", check_trace_dtype(self.trace_dtype))

    def check_model(self, model: nn.Module) -> None:
        check_trace_model(model, list(self.trained(model)))

    def init(self, model: nn.Module, state: State) -> Carry:
        self.check_model(model)
        return TraceCarry()

    def update(
        self,
        model: nn.Module,
        xs: Tensor,
        targets: Any,
        state: State,
        carry: Carry,
        objective: Objective,
        span: Span,
    ) -> RuleStep:
        dtype = self.trace_dtype if isinstance(self.trace_dtype, torch.dtype) else None

        def on_step(graph: TraceGraph, s: TraceStep, c: TraceCarry, counted: bool,
                    grads: dict[str, Tensor]) -> None:  # fmt: skip
            relation_traces(graph, s, c, counted, grads, dtype)
            neuron_traces(graph, s, c, counted, grads, dtype)

        return run_chunk(
            model, self.trained(model), xs, targets, state, carry, objective, span,
            on_step=on_step, multi_step=self.mode == "multi-step",
        )  # fmt: skip


def relation_traces(
    graph: TraceGraph,
    s: TraceStep,
    carry: TraceCarry,
    counted: bool,
    grads: dict[str, Tensor],
    dtype: torch.dtype | None,
) -> None:
    """Update every relation's weight and bias trace and add ``Σ δ ⊙ e`` to the gradient."""
    for i, r in enumerate(graph.relations):
        if r.group is None or not r.trained:
            continue
        z, Df, D = s.inputs[i], s.Df[i], s.D[r.group]
        assert z is not None and Df is not None
        delta = s.delta[r.group] if (counted and s.delta is not None) else None
        prev = s.delta_prev[r.group] if (counted and s.delta_prev is not None) else None
        if r.weight in graph.trained:
            e = carry.weight.get(i)
            if e is None:
                B, H, S = Df.shape
                e = carry.weight[i] = Df.new_zeros(B, z.shape[1], H, S, dtype=dtype or Df.dtype)
            g = weight_trace_step(e, D, z, Df, delta, prev)
            if g is not None:
                add_grad(grads, r.weight, g.t() if r.form == "linear" else g)
        if r.bias is not None and r.bias in graph.trained:
            eb = carry.bias.get(i)
            if eb is None:
                eb = carry.bias[i] = torch.zeros_like(Df, dtype=dtype or Df.dtype)
            if prev is not None:
                add_grad(grads, r.bias, (prev * eb).sum((0, 2)))
            mix_small(eb, D, Df)
            if delta is not None:
                add_grad(grads, r.bias, (delta * eb).sum((0, 2)))


def weight_trace_step(
    e: Tensor,
    D: Tensor,
    z: Tensor,
    Df: Tensor,
    delta: Tensor | None,
    prev: Tensor | None,
) -> Tensor | None:
    """One D-RTRL step of a weight trace, in place; returns its gradient ``(I, H)`` (or None).

    Args:
        e: the trace ``(B, I, H, S)``, updated in place.
        D: ``(B, H, S, S)``; z: ``(B, I)``; Df: ``(B, H, S)``.
        delta: ``(B, H, S)`` learning signal, or None (not counted).
        prev: ``(B, H, S)`` multi-step signal contracted with the *previous* trace, or None.
    """
    dt = e.dtype
    z, D, Df = z.to(dt), D.to(dt), Df.to(dt)
    g: Tensor | None = None
    if prev is not None:
        g = torch.einsum("biha,bha->ih", e, prev.to(dt))
    if e.shape[-1] == 1:
        e1 = e[..., 0]  # (B, I, H)
        e1.mul_(D[:, None, :, 0, 0]).addcmul_(z[:, :, None], Df[:, None, :, 0])
        if delta is not None:
            d = delta[..., 0].to(dt)  # (B, H)
            acc = torch.zeros_like(e1[0])  # (I, H)
            for b in range(e1.shape[0]):
                acc.addcmul_(e1[b], d[b])
            g = acc if g is None else g + acc
    else:
        e.copy_(torch.einsum("bhac,bihc->biha", D, e) + z[:, :, None, None] * Df[:, None])
        if delta is not None:
            acc = torch.einsum("biha,bha->ih", e, delta.to(dt))
            g = acc if g is None else g + acc
    return g
