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
the Jacobian is block-diagonal. Memory that lives in *another* group (a leaky readout, κ > 0,
or a second stateful layer) is not propagated into upstream traces by default
(``readout="state"``); the readout's and the later layer's own weights stay exact.
``readout="filter"`` handles a final ``LeakyReadout`` exactly for the layer feeding it: that
layer's traces are filtered with ``κ`` and contracted with ``W_outᵀ ∂ℓ_t/∂y_t``
(:mod:`chronograd.rules._readout_filter`), which is e-prop's ``F_κ`` for any hidden cell: on
LIF/ALIF it equals symmetric e-prop (:class:`~chronograd.rules.EProp`).

Implementation: the engine hands over blocks of up to 32 steps; the weight traces are then
advanced once per block by an exact regrouping of the recursion (:func:`advance`: an adjoint
recursion over the block's ``S``-vectors, one batched matmul, one pass over the trace), so a
``(S, B, I, H)`` trace is read and written once per block rather than once per step.

Menick et al. (2021), "Practical real time recurrent learning with a sparse approximation"
(SnAp-1 keeps the same diagonal); Murray (2019), "Local online learning in recurrent networks
with random feedback" (RFLO); braintrace (github.com/chaobrain/braintrace), ``D_RTRL``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, final

import torch
from torch import Tensor, nn

from chronograd.cells.base import State
from chronograd.objectives import Objective
from chronograd.rules._readout_filter import check_filter_model, filter_block, filter_target
from chronograd.rules._traces import (
    TraceCarry,
    add_grad,
    bias_traces,
    check_trace_dtype,
    check_trace_model,
    graph_for,
    matmul,
    matvec,
    neuron_traces,
    run_chunk,
    trace_dtype_of,
)
from chronograd.rules.base import Carry, Chunk, LearningRule, RuleStep, check_chunk_size
from chronograd.traces.graph import TraceGraph
from chronograd.traces.structure import TraceBlock


@final
@dataclass(frozen=True)
class DRTRL(LearningRule):
    """Diagonal RTRL with per-sample eligibility traces (see the module docstring).

    Args:
        mode: ``"single-step"`` (``δ_t = ∂ℓ_t/∂h_t``) or ``"multi-step"`` (adds ``δ^prev``).
        chunk_size: steps per update (``None``: one update per sequence); the traces are
            carried across the chunks of a sequence and reset at its start.
        trace_dtype: dtype of the traces (default: the state's).
        readout: ``"state"`` (default: a leaky readout is a hidden group like any other, its
            memory not propagated upstream) or ``"filter"`` (a final ``LeakyReadout`` with
            ``κ > 0`` handled exactly for the layer feeding it, e-prop's ``F_κ``; the model
            must be a Stack ending in a LeakyReadout fed directly by a stateful cell).
        (plus the options shared by every rule, see :class:`LearningRule`)
    """

    mode: Literal["single-step", "multi-step"] = "single-step"
    chunk_size: int | None = None
    trace_dtype: torch.dtype | str | None = None
    readout: Literal["state", "filter"] = "state"

    def _check(self) -> None:
        if self.mode not in ("single-step", "multi-step"):
            raise ValueError(f"mode must be 'single-step' or 'multi-step', got {self.mode!r}")
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
                carry.graph = graph_for(model, xs[0], state, list(params))
            target = filter_target(model, carry.graph)

        def on_block(graph: TraceGraph, blk: TraceBlock, c: TraceCarry,
                     grads: dict[str, Tensor]) -> None:  # fmt: skip
            if target is not None:
                blk = filter_block(graph, blk, target)
            weight_traces(graph, blk, c, grads, dtype)
            bias_traces(graph, blk, c, grads, dtype)
            neuron_traces(graph, blk, c, grads, dtype)

        return run_chunk(
            model, params, xs, targets, state, carry, objective, span,
            on_block=on_block, multi_step=self.mode == "multi-step",
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


def advance(
    e: Tensor,
    z: Tensor,
    D: Tensor,
    Df: Tensor,
    delta: Tensor | None,
    prev: Tensor | None,
    fresh: bool = False,
) -> Tensor | None:
    """Advance a weight trace over ``K`` steps in place; return the steps' gradient ``(I, H)``.

    With steps ``s = 0..K-1``, ``e_s = D_s e_{s-1} + z_s ⊗ Df_s`` and ``e_{-1} = e`` (given)::

        Σ_s <δ_s, e_s> + <δ^prev_s, e_{s-1}>  =  <μ, e_{-1}> + Σ_s z_s ⊗ <Df_s, λ_s>
        λ_{K-1} = δ'_{K-1},  λ_s = δ'_s + D_{s+1}ᵀ λ_{s+1},  μ = D_0ᵀ λ_0 + δ^prev_0
        e_{K-1} = Q_{-1} e_{-1} + Σ_s z_s ⊗ Q_s Df_s,  Q_{K-1} = I,  Q_{s-1} = Q_s D_s

    (``δ'_s = δ_s + δ^prev_{s+1}``; products per sample and neuron, ``S × S``). This is the
    per-step recursion regrouped: the same gradient, with the ``(S, B, I, H)`` trace read and
    written once per block instead of every step; the rest is one matmul per block.

    Args:
        e: the trace ``(S, B, I, H)``, updated in place.
        z: ``(K, B, I)`` relation inputs; D: ``(K, B, H, S, S)``; Df: ``(K, B, H, S)``.
        delta: ``(K, B, H, S)`` learning signal, or None (no loss in this block).
        prev: ``(K, B, H, S)`` multi-step signal (pairs with the previous step's trace), or None.
        fresh: ``e`` is new (zero at the sequence start): it is written without being read.
    """
    dt = e.dtype
    S = e.shape[0]
    K = z.shape[0]
    D, Df, z = D.to(dt), Df.to(dt), z.to(dt)
    Z = z.permute(1, 2, 0)  # (B, I, K)
    g: Tensor | None = None
    if delta is not None or prev is not None:
        d = torch.zeros_like(Df) if delta is None else delta.to(dt).clone()
        if prev is not None:
            d[:-1] += prev[1:].to(dt)  # δ^prev_k pairs with e_{k-1}
        lam = [d[K - 1]]
        for k in range(K - 2, -1, -1):
            lam.append(d[k] + matvec(D[k + 1], lam[-1], transpose=True))
        lam.reverse()  # λ_k, (B, H, S)
        mu = matvec(D[0], lam[0], transpose=True)
        if prev is not None:
            mu = mu + prev[0].to(dt)
        Y = (Df * torch.stack(lam)).sum(-1)  # (K, B, H)
        B, I = Z.shape[0], Z.shape[1]
        g = z.reshape(K * B, I).t() @ Y.reshape(K * B, -1)  # (I, H)
        for a in range(S if not fresh else 0):  # <μ, e_{-1}>: one read of the trace
            for b in range(B):
                g.addcmul_(e[a, b], mu[b, :, a])
    Q = D[K - 1]  # Q_{K-2}
    F = [Df[K - 1], matvec(Q, Df[K - 2])] if K > 1 else [Df[0]]
    for k in range(K - 2, 0, -1):
        Q = matmul(Q, D[k])  # Q_{k-1}
        F.append(matvec(Q, Df[k - 1]))
    F.reverse()  # F[s] = Q_s Df_s
    Q = matmul(Q, D[0]) if K > 1 else D[0]  # Q_{-1}
    Fs = torch.stack(F, 1)  # (B, K, H, S)
    if fresh:
        for a in range(S):
            torch.bmm(Z, Fs[..., a], out=e[a])
    elif S == 1:
        e[0].mul_(Q[:, None, :, 0, 0]).baddbmm_(Z, Fs[..., 0])
    elif not bool(torch.triu(Q, diagonal=1).any()):
        # lower-triangular Q (e.g. ALIF with the reset's gradient stopped, or a readout-filtered
        # trace): in place, last component first, each reading only components not yet updated
        for a in range(S - 1, -1, -1):
            e[a].mul_(Q[:, None, :, a, a])
            for c in range(a):
                q = Q[:, None, :, a, c]
                if bool(q.any()):
                    e[a].addcmul_(e[c], q)
            e[a].baddbmm_(Z, Fs[..., a])
    else:
        new = torch.empty_like(e)
        for a in range(S):
            torch.mul(e[0], Q[:, None, :, a, 0], out=new[a])
            for c in range(1, S):
                new[a].addcmul_(e[c], Q[:, None, :, a, c])
            new[a].baddbmm_(Z, Fs[..., a])
        e.copy_(new)
    return g
