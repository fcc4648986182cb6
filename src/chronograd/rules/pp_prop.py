"""ES-D-RTRL / pp-prop: D-RTRL with each weight trace factorised into input × output traces.

braintrace's ``IODimVjpAlgorithm`` (``ES_D_RTRL`` / ``pp_prop``). Per relation ``y = W z + b``
feeding a group with ``S`` state variables per neuron, decay ``α ∈ [0, 1)`` (or a rank ``r``,
``α = (r-1)/(r+1)``), and ``D_t`` (B,H,S,S), ``Df_t`` (B,H,S) from the trace engine::

    ex_t = α ex_{t-1} + z_t                                   (B, I)     presynaptic trace
    ef_t = α D_t ef_{t-1} + (1-α) Df_t                        (B, H, S)  postsynaptic trace
    σ_t  = Σ_a δ_t[..., a] ef_t[..., a] / c_n                 (B, H)
    gW  += ex_tᵀ σ_t        gb += Σ_b σ_t

with ``c_n = 1 - α^{n+1}`` the bias correction of the exponential average (``n`` previous
steps since the sequence start; 1 once ``n ≥ 1000``) and ``δ_t`` the engine's learning signal
(partial within a neuron, total across groups). The traces are zero at each sequence start and
carried across the chunks of a sequence. Per-neuron parameters keep exact traces and
output-only parameters their exact same-step gradient, as in D-RTRL. Memory ``O(B(I + H·S))``
per relation, flat in ``T``; cost about one extra outer product per step, which is batched
here: ``ex_t`` and ``σ_t`` are buffered for 32 steps and contracted with one matmul.

With ``α = 0`` the rule is the one-step-truncated gradient (TBPTT(1)) of every relation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

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

_FLUSH = 32  # steps of (ex, σ) buffered before one matmul into the gradient
_EXACT_AFTER = 1000  # c_n = 1 once n >= this many steps


@final
@dataclass(frozen=True)
class PPProp(LearningRule):
    """ES-D-RTRL (pp-prop): factorised eligibility traces (see the module docstring).

    Args:
        decay: ``α ∈ [0, 1)``; default 0.9 when neither ``decay`` nor ``rank`` is given.
        rank: alternatively, ``r ≥ 1`` with ``α = (r - 1)/(r + 1)``.
        chunk_size: steps per update (``None``: one update per sequence).
        trace_dtype: dtype of the traces (default: the state's).
        (plus the options shared by every rule, see :class:`LearningRule`)
    """

    decay: float | None = None
    rank: int | None = None
    chunk_size: int | None = None
    trace_dtype: torch.dtype | str | None = None

    def _check(self) -> None:
        if self.decay is not None and self.rank is not None:
            raise ValueError(
                f"give either decay or rank, not both (got decay={self.decay}, rank={self.rank})"
            )
        if self.decay is not None and not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {self.decay}")
        if self.rank is not None and (
            not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1
        ):
            raise ValueError(f"rank must be an int >= 1, got {self.rank!r}")
        check_chunk(self.chunk_size)
        object.__setattr__(self, "trace_dtype", check_trace_dtype(self.trace_dtype))

    @property
    def alpha(self) -> float:
        """The decay ``α`` in use."""
        if self.rank is not None:
            return (self.rank - 1) / (self.rank + 1)
        return 0.9 if self.decay is None else float(self.decay)

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
        alpha = self.alpha
        buffers: dict[int, tuple[list[Tensor], list[Tensor]]] = {}

        def on_step(graph: TraceGraph, s: TraceStep, c: TraceCarry, counted: bool,
                    grads: dict[str, Tensor]) -> None:  # fmt: skip
            corr = 1.0 if c.n >= _EXACT_AFTER else 1.0 - alpha ** (c.n + 1)
            for i, r in enumerate(graph.relations):
                if r.group is None or not r.trained:
                    continue
                z, Df, D = s.inputs[i], s.Df[i], s.D[r.group]
                assert z is not None and Df is not None
                ex, ef = c.ex.get(i), c.ef.get(i)
                if ex is None or ef is None:
                    ex = c.ex[i] = torch.zeros_like(z, dtype=dtype or z.dtype)
                    ef = c.ef[i] = torch.zeros_like(Df, dtype=dtype or Df.dtype)
                ex.mul_(alpha).add_(z.to(ex.dtype))
                mix_small(ef, D, Df, scale=alpha, src_scale=1.0 - alpha)
                if not counted or s.delta is None:
                    continue
                sigma = (s.delta[r.group].to(ef.dtype) * ef).sum(-1) / corr  # (B, H)
                if r.bias is not None and r.bias in graph.trained:
                    add_grad(grads, r.bias, sigma.sum(0))
                if r.weight in graph.trained:
                    xb, sb = buffers.setdefault(i, ([], []))
                    xb.append(ex.clone())
                    sb.append(sigma)
                    if len(xb) == _FLUSH:
                        _flush(graph, i, buffers, grads)
            neuron_traces(graph, s, c, counted, grads, dtype)

        def on_end(graph: TraceGraph, c: TraceCarry, grads: dict[str, Tensor]) -> None:
            for i in list(buffers):
                _flush(graph, i, buffers, grads)

        return run_chunk(
            model, self.trained(model), xs, targets, state, carry, objective, span,
            on_step=on_step, on_end=on_end,
        )  # fmt: skip


def _flush(
    graph: TraceGraph,
    i: int,
    buffers: dict[int, tuple[list[Tensor], list[Tensor]]],
    grads: dict[str, Tensor],
) -> None:
    """``gW += Σ_k ex_kᵀ σ_k`` over the buffered steps of relation ``i``, as one matmul."""
    xb, sb = buffers.pop(i, ([], []))
    if not xb:
        return
    r = graph.relations[i]
    X = torch.cat(xb)  # (k·B, I)
    Sg = torch.cat(sb)  # (k·B, H)
    add_grad(grads, r.weight, Sg.t() @ X if r.form == "linear" else X.t() @ Sg)


ESDRTRL = PPProp
"""Alias: ES-D-RTRL is the name of pp-prop in braintrace's papers."""
