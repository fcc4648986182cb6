"""Learning signals: ``δ = ∂ℓ/∂h_t`` (partial within a group), ``δ^prev``, and exact terms.

With ``g_a`` the total derivative of the block's loss w.r.t. the new state tensor ``h^a_t`` and
``T[c, a] = ∂h^c_t/∂h^a_t`` the same-step Jacobian between a neuron's own state variables (on
the cut step), every path from ``h^a_t`` to the loss either avoids the group's other state
variables or has a last one ``c``, so ``g_a = δ_a + Σ_{c≠a} T[c, a] δ_c`` and, per neuron,
``δ = (I + T_offᵀ)^{-1} g``. ``δ`` is *partial within the group* (the trace already follows
``i_t → v_t`` inside a two-state neuron: using ``g`` would count that path twice) and *total
across groups* (a later layer or the readout at the same step is included, else the upstream
weights would get no gradient).

On the cut step the paths across relations are restored by a *sweep*: the relation outputs
are crossed backwards, latest call first, each with one VJP through its uncut output (one call
per relation for all steps of a block). When the graph runs uncut (all groups analytic), the
plain backward pass already gives ``g`` and no sweep is needed.

``δ^prev_t = d/dh^G_{t-1} [ℓ_t - Σ_{a∈G} <δ_a, h^a_t>]`` (through the uncut step) is the part
of ``∂ℓ_t/∂h_{t-1}`` that avoids the group's new state: non-zero when an output is computed
from the previous state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from chronograd.traces.groups import HiddenGroup
from chronograd.traces.structure import (
    Record,
    add_into,
    reduce_to,
    relation_grads,
    some,
    stack_or_zeros,
    vjp,
)

if TYPE_CHECKING:
    from chronograd.traces.graph import TraceGraph

Pending = list[list[tuple[int, Tensor | None]]]  # per relation: (target index of y, uncut y)


def sweep(
    roots: Sequence[Tensor], cots: Sequence[Tensor], targets: Sequence[Tensor], pending: Pending
) -> list[Tensor | None]:
    """Gradients of ``Σ <cot, root>`` w.r.t. ``targets`` through the uncut step.

    ``pending`` lists, latest relation call first, the targets that are cut relation outputs
    with their uncut outputs; each relation is crossed with one VJP (all steps at once).
    """
    grads = vjp(roots, targets, cots)
    for entries in pending:
        live = [(grads[j], y) for j, y in entries if grads[j] is not None and y is not None]
        live = [(g, y) for g, y in live if y.requires_grad]
        if not live:
            continue
        more = vjp([y for _, y in live], targets, [g for g, _ in live])  # type: ignore[misc]
        for j, m in enumerate(more):
            if m is not None:
                prev = grads[j]
                grads[j] = m if prev is None else prev + m
    return grads


def group_signal(
    g: HiddenGroup,
    deps: dict[int, tuple[int, ...]] | None,
    g_new: Sequence[Tensor],
    new: Sequence[Sequence[Tensor]],
) -> Tensor:
    """The partial signal ``δ = (I + T_offᵀ)^{-1} g`` of one group over a block, ``(K, B, H, S)``.

    Args:
        g: the group.
        deps: ``{c: (a, ...)}``: ``h^c_t`` depends on ``h^a_t`` within the step (None: none).
        g_new: per state variable of the group, the total derivatives ``(K, B, H)``.
        new: per step, the new state tensors of the step's graph (``T`` is read from them).
    """
    if g.S == 1:
        return g_new[0].unsqueeze(-1)
    gs = torch.stack(list(g_new), -1)  # (K, B, H, S)
    if not deps:
        return gs
    M = torch.eye(g.S, dtype=gs.dtype, device=gs.device).expand(*gs.shape, g.S).clone()
    K = len(new)
    for c, a_s in deps.items():
        outs = [new[k][g.leaves[c]] for k in range(K)]
        ins = [new[k][g.leaves[a]] for k in range(K) for a in a_s]
        Ts = vjp(outs, ins, [torch.ones_like(o) for o in outs])
        for k in range(K):
            for n, a in enumerate(a_s):
                T = Ts[k * len(a_s) + n]
                if T is not None:
                    M[k, ..., a, c] = T  # (I + T_offᵀ)[a, c] = T[c, a], per neuron
    return torch.linalg.solve(M, gs.unsqueeze(-1)).squeeze(-1)


def learning_signal(
    graph: TraceGraph,
    rec: Record,
    loss: Tensor,
    params: Mapping[str, Tensor],
    Df: tuple[Tensor | None, ...],
    Dp: dict[tuple[str, int], Tensor],
) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
    """``δ`` per group ``(K, B, H, S)`` and the exact same-step gradients of the block."""
    K = len(rec.new)
    leaves = [j for g in graph.groups for j in g.leaves]
    exact_p = list(graph.output_params) + [p.name for p in graph.neuron_params if p.direct]
    y_idx = [
        i for i, r in enumerate(graph.relations) if r.trained and (r.group is None or r.direct)
    ]
    swept = [] if graph.uncut else list(graph.sweep_relations)
    others = [i for i in y_idx if i not in swept]
    targets = [rec.new[k][j] for k in range(K) for j in leaves] + [params[n] for n in exact_p]
    base = len(targets)
    targets += [some(rec.ys[k][i]) for i in others + swept for k in range(K)]
    pos = {i: base + n * K for n, i in enumerate(others + swept)}  # target of y_i at step 0
    pending: Pending = [[(pos[i] + k, rec.full[k][i]) for k in range(K)] for i in reversed(swept)]
    grads = sweep([loss], [torch.ones_like(loss)], targets, pending)
    delta = []
    n_leaves = len(leaves)
    offset = {j: n for n, j in enumerate(leaves)}
    for gi, g in enumerate(graph.groups):
        g_new = [
            stack_or_zeros([grads[k * n_leaves + offset[j]] for k in range(K)], rec.new[0][j])
            for j in g.leaves
        ]
        delta.append(group_signal(g, graph.intra.get(gi), g_new, rec.new))
    exact: dict[str, Tensor] = {}
    for n, name in enumerate(exact_p):
        gp = grads[K * n_leaves + n]
        if gp is not None:
            exact[name] = gp
    for i in y_idx:
        r = graph.relations[i]
        ref = some(rec.ys[0][i])
        gy = stack_or_zeros([grads[pos[i] + k] for k in range(K)], ref)  # (K, B, H)
        if r.group is not None:  # the direct part: minus what goes through the group's state
            gy = gy - (delta[r.group] * some(Df[i])).sum(-1)
        z = torch.stack([some(rec.zs[k][i]) for k in range(K)])  # (K, B, I)
        grads_r = relation_grads(r, z.reshape(-1, z.shape[-1]), gy.reshape(-1, gy.shape[-1]))
        add_into(exact, {k: v for k, v in grads_r.items() if k in graph.trained})
    for p in graph.neuron_params:
        if p.direct and p.name in exact:
            through = sum(
                reduce_to(delta[gi] * Dp[(p.name, gi)], params[p.name]) for gi in p.groups
            )
            exact[p.name] = exact[p.name] - through
    return tuple(delta), exact


def previous_signal(
    graph: TraceGraph, rec: Record, loss: Tensor, delta: tuple[Tensor, ...]
) -> tuple[Tensor, ...]:
    """``δ^prev`` per group, ``(K, B, H, S)`` (see the module docstring)."""
    K = len(rec.new)
    rels = [] if graph.uncut else [i for i in graph.step_relations if any(
        rec.full[k][i] is not None and rec.full[k][i].requires_grad for k in range(K)  # type: ignore[union-attr]
    )]  # fmt: skip
    out = []
    for gi, g in enumerate(graph.groups):
        roots: list[Tensor] = [loss]
        cots: list[Tensor] = [torch.ones_like(loss)]
        for k in range(K):
            for a, j in enumerate(g.leaves):
                roots.append(rec.new[k][j])
                cots.append(-delta[gi][k, ..., a])
        targets = [rec.h_prev[k][j] for k in range(K) for j in g.leaves]
        base = len(targets)
        targets += [some(rec.ys[k][i]) for i in rels for k in range(K)]
        pending: Pending = [
            [(base + n * K + k, rec.full[k][i]) for k in range(K)]
            for n, i in reversed(list(enumerate(rels)))
        ]
        grads = sweep(roots, cots, targets, pending)
        cols = [
            stack_or_zeros([grads[k * g.S + a] for k in range(K)], rec.h_prev[0][j])
            for a, j in enumerate(g.leaves)
        ]
        out.append(torch.stack(cols, -1))
    return tuple(out)


def readout_signal(
    graph: TraceGraph,
    rec: Record,
    loss: Tensor | None,
    params: Mapping[str, Tensor],
    rel: int,
    group: int,
) -> tuple[Tensor, Tensor | None]:
    """``(σ, L)`` of the group whose output ``z`` is the input of readout relation ``rel``.

    ``σ`` (K, B, H, S) ``= ∂z_t/∂h_t`` per neuron (one VJP with an all-ones cotangent: ``z``
    depends on each neuron's own state, checked when the rule compiles the model) and ``L``
    (K, B, H) ``= W_outᵀ ∂ℓ_t/∂y_t`` with ``y_t = W_out z_t + b`` the relation's output (the
    error the readout sends back at the same step; None when ``loss`` is None).
    """
    K = len(rec.new)
    g = graph.groups[group]
    zs = [some(rec.zs[k][rel]) for k in range(K)]
    ins = [rec.new[k][j] for k in range(K) for j in g.leaves]
    got = vjp(zs, ins, [torch.ones_like(z) for z in zs])
    cols = [
        stack_or_zeros([got[k * g.S + a] for k in range(K)], rec.new[0][j])
        for a, j in enumerate(g.leaves)
    ]
    sigma = torch.stack(cols, -1)  # (K, B, H, S)
    if loss is None:
        return sigma, None
    ys = [some(rec.ys[k][rel]) for k in range(K)]
    gy = stack_or_zeros(vjp([loss], ys, [torch.ones_like(loss)]), ys[0])  # (K, B, O)
    r = graph.relations[rel]
    w = params[r.weight].detach()
    L = gy @ w if r.form == "linear" else gy @ w.t()  # (K, B, H)
    return sigma, L
