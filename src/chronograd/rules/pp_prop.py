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
per relation, flat in ``T``; cost about one extra outer product per step, batched here over
the engine's blocks of steps: ``gW += EXᵀ Σ`` is one matmul per block.

With ``α = 0`` the rule is the one-step-truncated gradient (TBPTT(1)) of every relation.

``mode="multi-step"`` with ``window=k`` is braintrace's multi-step
(:mod:`chronograd.traces.window`): reverse mode inside windows of ``k`` steps and the factored
trace ``ε ≈ ex ⊗ ef / c_n`` entering only at a window's entry,
``∇θ += ∂L_w/∂θ|_{h_entry} + contract(∂L_w/∂h_entry, ε_entry)``; one window over the sequence
is BPTT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, final

import torch
from torch import Tensor, nn

from chronograd.cells.base import State
from chronograd.objectives import Objective
from chronograd.rules.base import Carry, Chunk, LearningRule, RuleStep, check_chunk_size
from chronograd.traces.chunk import (
    TraceCarry,
    add_grad,
    check_trace_dtype,
    check_trace_model,
    neuron_traces,
    run_chunk,
    trace_dtype_of,
)
from chronograd.traces.graph import TraceGraph
from chronograd.traces.recursion import small_traces
from chronograd.traces.structure import TraceBlock
from chronograd.traces.window import check_mode, contract_factored, run_windows

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
        mode: ``"single-step"`` or ``"multi-step"`` (reverse mode inside windows of ``window``
            steps, the traces entering at each window's entry).
        window: steps per window in ``"multi-step"`` mode.
        (plus the options shared by every rule, see :class:`LearningRule`)
    """

    decay: float | None = None
    rank: int | None = None
    chunk_size: int | None = None
    trace_dtype: torch.dtype | str | None = None
    mode: Literal["single-step", "multi-step"] = "single-step"
    window: int = 1

    def _check(self) -> None:
        check_mode(self.mode, self.window, ("single-step", "multi-step"))
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
        check_chunk_size(self.chunk_size)
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
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        dtype = trace_dtype_of(self)
        alpha = self.alpha

        def on_block(graph: TraceGraph, blk: TraceBlock, c: TraceCarry,
                     grads: dict[str, Tensor]) -> None:  # fmt: skip
            factored_traces(graph, blk, c, grads, alpha, dtype)
            neuron_traces(graph, blk, c, grads, dtype)

        if self.mode == "multi-step":
            return run_windows(
                model, self.trained(model), xs, targets, state, carry, objective, span,
                window=self.window, contract=contract_factored(alpha), on_block=on_block,
            )  # fmt: skip
        return run_chunk(
            model, self.trained(model), xs, targets, state, carry, objective, span,
            on_block=on_block,
        )  # fmt: skip


def _correction(n: int, K: int, alpha: float, like: Tensor) -> Tensor:
    """``c = 1 - α^{m+1}`` for the block's steps ``m = n..n+K-1`` (1 once ``m ≥ 1000``), (K,1,1)."""
    m = torch.arange(n, n + K, device=like.device, dtype=like.dtype)
    c = 1.0 - alpha ** (m + 1)
    return torch.where(m >= _EXACT_AFTER, torch.ones_like(c), c).reshape(K, 1, 1)


def input_trace(ex: Tensor, z: Tensor, alpha: float) -> Tensor:
    """``ex_k = α ex_{k-1} + z_k`` over a block, as one matmul; ``ex`` updated in place.

    Args:
        ex: ``(B, I)`` the trace before the block.
        z: ``(K, B, I)`` the relation's inputs.

    Returns:
        ``(K, B, I)`` the trace after each step.
    """
    K = z.shape[0]
    k = torch.arange(K, device=z.device, dtype=z.dtype)
    lag = k[:, None] - k[None, :]  # (K, K): k - j
    A = torch.where(lag >= 0, alpha ** lag.clamp(min=0), torch.zeros_like(lag))
    if alpha == 0.0:
        A = torch.eye(K, device=z.device, dtype=z.dtype)
    EX = (A @ z.reshape(K, -1)).reshape(z.shape) + (alpha ** (k + 1))[:, None, None] * ex
    ex.copy_(EX[-1])
    return EX


def factored_traces(
    graph: TraceGraph,
    blk: TraceBlock,
    carry: TraceCarry,
    grads: dict[str, Tensor],
    alpha: float,
    dtype: torch.dtype | None,
) -> None:
    """pp-prop's ``ex``, ``ef`` per trained relation and ``gW += Σ_k ex_kᵀ σ_k`` (one matmul)."""
    for i, r in enumerate(graph.relations):
        if r.group is None or not r.trained:
            continue
        z, Df = blk.inputs[i], blk.Df[i]
        assert z is not None and Df is not None
        ex, ef = carry.ex.get(i), carry.ef.get(i)
        if ex is None or ef is None:
            ex = carry.ex[i] = torch.zeros_like(z[0], dtype=dtype or z.dtype)
            ef = carry.ef[i] = torch.zeros_like(Df[0], dtype=dtype or Df.dtype)
        EX = input_trace(ex, z.to(ex.dtype), alpha)
        EF = small_traces(ef, blk.D[r.group], Df, scale=alpha, src_scale=1.0 - alpha)[1:]
        if blk.delta is None:
            continue
        K, B = z.shape[0], z.shape[1]
        corr = _correction(carry.n, K, alpha, EF)
        sigma = (blk.delta[r.group].to(EF.dtype) * EF).sum(-1) / corr  # (K, B, H)
        flat_s, flat_x = sigma.reshape(K * B, -1), EX.reshape(K * B, -1)
        if r.weight in graph.trained:
            add_grad(
                grads, r.weight, flat_s.t() @ flat_x if r.form == "linear" else flat_x.t() @ flat_s
            )
        if r.bias is not None and r.bias in graph.trained:
            add_grad(grads, r.bias, flat_s.sum(0))


ESDRTRL = PPProp
"""Alias: ES-D-RTRL is the name of pp-prop in braintrace's papers."""
