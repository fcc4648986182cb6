"""braintrace's multi-step mode: reverse mode inside windows, eligibility traces across them.

For a window of steps ``[s, s + k)`` entered from the state ``h_{s-1}`` (``h_entry``), with the
window's loss ``L_w = Σ_{t ∈ w} w_t ℓ_t`` and a trace rule's approximation ``ε_{s-1}`` of
``dh_{s-1}/dθ`` (D-RTRL's or pp-prop's traces)::

    ∇θ += ∂L_w/∂θ |_{h_entry fixed}  +  contract(∂L_w/∂h_entry, ε_{s-1})

The first term is ordinary reverse mode over the window (BPTT inside it, every parameter and
every path, recurrent weights included); ``∂L_w/∂h_entry`` is the full derivative through the
window's steps. The traces then advance over the window by the rule's own recursion (no
learning signal is needed for that). With ``k = 1`` this is ``∂ℓ_t/∂θ|_{h_{t-1}} +
contract(∂ℓ_t/∂h_{t-1}, ε_{t-1})``; one window over the sequence is BPTT (``ε`` is zero at the
sequence start); on models whose traces are exact (no recurrent weights) every ``k`` is exact.

Windows are aligned on the sequence (they start at multiples of ``k`` from the sequence start)
and never cross a chunk boundary: with a ``chunk_size`` that is a multiple of ``k`` the chunks
change only how the gradient is split into updates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from chronograd._tree import detach, tree_cat, tree_leaves, tree_unflatten
from chronograd.cells.base import State
from chronograd.objectives import Objective
from chronograd.rules.base import Grads, RuleStep, penalty_grads
from chronograd.sequence import Span, unroll
from chronograd.traces.graph import TraceGraph
from chronograd.traces.structure import TraceBlock, add_into

Contract = Callable[[TraceGraph, Any, list[Tensor], dict[str, Tensor]], None]
"""``contract(graph, carry, per_group_signal, grads)``: adds ``contract(∂L_w/∂h_entry, ε)``;
``per_group_signal[g]`` is ``(B, H, S)``."""


def check_mode(mode: Any, window: Any, allowed: tuple[str, ...]) -> None:
    """A trace rule's ``mode`` is one of ``allowed`` and ``window`` a positive int (1 unless
    ``mode="multi-step"``)."""
    if mode not in allowed:
        raise ValueError(f"mode must be one of {', '.join(map(repr, allowed))}, got {mode!r}")
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"window must be a positive int (steps per window), got {window!r}")
    if window != 1 and mode != "multi-step":
        raise ValueError(f"window={window} must go with mode='multi-step' (got mode={mode!r})")


def window_stops(span: Span, T: int, window: int) -> list[tuple[int, int]]:
    """The windows ``[a, b)`` (chunk-relative) of a chunk covering ``span``."""
    out, t = [], 0
    while t < T:
        stop = min(T, t + window - (span.start + t) % window)
        out.append((t, stop))
        t = stop
    return out


def run_windows(
    model: nn.Module,
    params: dict[str, nn.Parameter],
    xs: Tensor,
    targets: Any,
    state: State,
    carry: Any,
    objective: Objective,
    span: Span,
    *,
    window: int,
    contract: Contract,
    on_block: Callable[[TraceGraph, TraceBlock, Any, dict[str, Tensor]], None],
) -> RuleStep:
    """One chunk of a trace rule in multi-step mode (see the module docstring).

    ``carry`` is a :class:`~chronograd.traces.chunk.TraceCarry`; ``on_block`` advances its traces
    over a block run without a loss (it is the rule's ordinary block callback).
    """
    from chronograd.traces.chunk import BLOCK, begin_chunk, time_slice

    T = xs.shape[0]
    carry, w = begin_chunk(model, xs, state, carry, objective, span, params)
    graph = carry.graph
    assert graph is not None  # compiled by begin_chunk
    names = list(params)
    grads: dict[str, Tensor] = {}
    outs: list[Any] = []
    total = torch.zeros((), device=xs.device, dtype=w.dtype)
    for a, b in window_stops(span, T, window):
        h0 = [leaf.detach().requires_grad_(True) for leaf in tree_leaves(state)]
        with torch.enable_grad():
            out, _ = unroll(model, xs[a:b], tree_unflatten(state, h0))
            ell = (w[a:b] * objective.per_sample(out, time_slice(targets, a, b))).sum()
        if ell.requires_grad and bool(w[a:b].ne(0).any()):
            got = torch.autograd.grad(ell, [params[n] for n in names] + h0, allow_unused=True)
            add_into(grads, {n: g for n, g in zip(names, got) if g is not None})
            if carry.n > 0:
                gh = [
                    torch.zeros_like(h) if g is None else g for h, g in zip(h0, got[len(names) :])
                ]
                signal = [torch.stack([gh[j] for j in g.leaves], -1) for g in graph.groups]
                contract(graph, carry, signal, grads)
        # advance the traces over the window (the entry of the next one)
        for c0 in range(a, b, BLOCK):
            c1 = min(b, c0 + BLOCK)
            blk = graph.run(graph.prepare(xs[c0:c1]), 0, c1 - c0, state)
            on_block(graph, blk, carry, grads)
            carry = replace(carry, n=carry.n + c1 - c0)
            state = blk.state
        outs.append(detach(out))
        total = total + ell.detach()
    pen = penalty_grads(objective, dict(params))
    if pen:
        add_into(grads, pen)
    full: Grads = {
        n: (grads[n] if n in grads else torch.zeros_like(p)).to(p.dtype).reshape(p.shape)
        for n, p in params.items()
    }
    return RuleStep(full, state, carry, total.detach(), tree_cat(outs))


def _neuron_param(graph: TraceGraph, name: str) -> Any:
    return next(p for p in graph.neuron_params if p.name == name)


def contract_neurons(graph: TraceGraph, carry: Any, signal: list[Tensor], grads: Grads) -> None:
    """``Σ <∂L/∂h_entry, e>`` for the exact per-neuron traces ``e`` (B, H, S)."""
    for (name, gi), e in carry.neuron.items():
        v = signal[gi].to(e.dtype) * e
        add_into(grads, {name: v.sum() if _neuron_param(graph, name).shared else v.sum((0, 2))})


def contract_drtrl(graph: TraceGraph, carry: Any, signal: list[Tensor], grads: Grads) -> None:
    """D-RTRL's ``contract(∂L/∂h_entry, ε)``: weight traces ``(S, B, I, H)``, bias and neuron
    traces ``(B, H, S)``."""
    for i, e in carry.weight.items():
        r = graph.relations[i]
        g = torch.einsum("abih,bha->ih", e, signal[r.group].to(e.dtype))
        add_into(grads, {r.weight: g.t() if r.form == "linear" else g})
    for i, eb in carry.bias.items():
        r = graph.relations[i]
        add_into(grads, {r.bias: (signal[r.group].to(eb.dtype) * eb).sum((0, 2))})
    contract_neurons(graph, carry, signal, grads)


def contract_factored(alpha: float) -> Contract:
    """pp-prop's ``contract(∂L/∂h_entry, ε)`` with ``ε ≈ ex ⊗ ef / c_n`` (see
    :mod:`chronograd.rules.pp_prop`)."""

    def contract(graph: TraceGraph, carry: Any, signal: list[Tensor], grads: Grads) -> None:
        from chronograd.rules.pp_prop import _EXACT_AFTER

        m = carry.n - 1  # the step the entry traces were last advanced at
        c = 1.0 if m >= _EXACT_AFTER else 1.0 - alpha ** (m + 1)
        for i, ef in carry.ef.items():
            r = graph.relations[i]
            ex = carry.ex[i]
            sigma = (signal[r.group].to(ef.dtype) * ef).sum(-1) / c  # (B, H)
            if r.weight in graph.trained:
                g = sigma.t() @ ex if r.form == "linear" else ex.t() @ sigma
                add_into(grads, {r.weight: g})
            if r.bias is not None and r.bias in graph.trained:
                add_into(grads, {r.bias: sigma.sum(0)})
        contract_neurons(graph, carry, signal, grads)

    return contract
