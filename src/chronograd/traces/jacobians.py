"""Per-step Jacobians of the cut step: ``D`` (state to state), ``Df`` (relation to state), ``Dp``.

For a block of ``K`` steps (see :mod:`chronograd.traces.structure`):

* ``D`` (per group, ``(K, B, H, S, S)``) and ``Df`` (per relation, ``(K, B, H, S)``): in
  closed form for the groups of shipped cells (:mod:`chronograd.traces.analytic`, checked at
  compile time), else from vector-Jacobian products of the cut step with one-hot cotangents,
  one per state variable, over all neurons, groups and steps of the block at once. With the
  Jacobian block-diagonal per neuron (checked at compile time) a column sum *is* the block:
  the same quantity as the JVP with one-hot tangents, for one small backward pass through the
  element-wise part of the step (``vmap`` over forward-mode JVPs measured an order of
  magnitude slower in eager PyTorch on the CPU).
* ``Dp`` (per neuron parameter and group, ``(K, B, H, S)``): one forward-mode (dual number)
  pass of the cut step per direction, all-ones tangent on the parameter; parameters that
  change disjoint groups share a direction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn
from torch.func import functional_call

from chronograd._tree import detach, tree_leaves, tree_unflatten
from chronograd.traces.analytic import analytic_jacobians
from chronograd.traces.intercept import LinearCall, intercept_linears
from chronograd.traces.structure import NeuronParam, Record, StepOf, some, vjp

if TYPE_CHECKING:
    from chronograd.traces.graph import TraceGraph


def cut_jacobians(
    graph: TraceGraph, rec: Record
) -> tuple[tuple[Tensor, ...], tuple[Tensor | None, ...]]:
    """``D`` per group ``(K, B, H, S, S)`` and ``Df`` per trained state relation ``(K, B, H, S)``."""
    K = len(rec.new)
    D: list[Tensor] = []
    Df: list[Tensor | None] = [None] * len(graph.relations)
    auto = [gi for gi in range(len(graph.groups)) if gi not in graph.analytic]
    owners = graph.owners()
    for gi, g in enumerate(graph.groups):
        if gi in graph.analytic:
            prev = {
                f: torch.stack([rec.h_prev[k][j].detach() for k in range(K)])
                for f, j in zip(g.fields, g.leaves)
            }
            nxt = {
                f: torch.stack([rec.new[k][j].detach() for k in range(K)])
                for f, j in zip(g.fields, g.leaves)
            }
            got = analytic_jacobians(owners[gi], prev, nxt)
            assert got is not None
            D.append(got[0])
            for i in graph.state_relations:
                if graph.relations[i].group == gi:
                    Df[i] = got[1]
        else:
            ref = rec.h_prev[0][g.leaves[0]]
            D.append(ref.new_zeros(K, *ref.shape, g.S, g.S))
    rels = [i for i in graph.state_relations if graph.relations[i].group in auto]
    for i in rels:
        y = some(rec.ys[0][i])
        Df[i] = y.new_zeros(K, *y.shape, graph.groups[graph.relations[i].group].S)  # type: ignore[index]
    S_auto = max((graph.groups[gi].S for gi in auto), default=0)
    for a in range(S_auto):
        live = [gi for gi in auto if a < graph.groups[gi].S]
        outs = [rec.new[k][graph.groups[gi].leaves[a]] for k in range(K) for gi in live]
        ins = [rec.h_prev[k][j] for k in range(K) for gi in auto for j in graph.groups[gi].leaves]
        ins += [some(rec.ys[k][i]) for k in range(K) for i in rels]
        grads = vjp(outs, ins, [torch.ones_like(o) for o in outs])
        pos = 0
        for k in range(K):
            for gi in auto:
                for c in range(graph.groups[gi].S):
                    gd = grads[pos]
                    if gd is not None and a < graph.groups[gi].S:
                        D[gi][k, ..., a, c] = gd
                    pos += 1
        for k in range(K):
            for i in rels:
                gy = grads[pos]
                if gy is not None and a < graph.groups[graph.relations[i].group].S:  # type: ignore[index]
                    Df[i][k, ..., a] = gy  # type: ignore[index]
                pos += 1
    return tuple(D), tuple(Df)


def neuron_jacobians(
    graph: TraceGraph, rec: Record, params: Mapping[str, Tensor]
) -> dict[tuple[str, int], Tensor]:
    """``Dp = ∂h/∂p`` per (neuron parameter, group), ``(K, B, H, S)``, by forward-mode AD."""
    out: dict[tuple[str, int], list[Tensor]] = {}
    if not graph.neuron_params:
        return {}
    model = graph.model
    module = StepOf(model) if graph.hoisted else model
    prefix = "cell." if graph.hoisted else ""
    for k in range(len(rec.new)):
        yv = [None if y is None else y.detach() for y in rec.ys[k]]
        hv = [h.detach() for h in rec.h_prev[k]]
        u = detach(rec.us[k])
        for direction in graph.directions:
            tangents = _forward_tangents(
                graph, module, prefix, direction, params, u, hv, yv, rec.states[k]
            )
            for p in direction:
                for gi in p.groups:
                    g = graph.groups[gi]
                    cols = [
                        torch.zeros_like(hv[j]) if tangents[j] is None else tangents[j]
                        for j in g.leaves
                    ]
                    out.setdefault((p.name, gi), []).append(torch.stack(cols, -1))  # type: ignore[arg-type]
    return {key: torch.stack(v) for key, v in out.items()}


def _forward_tangents(
    graph: TraceGraph,
    module: nn.Module,
    prefix: str,
    direction: Sequence[NeuronParam],
    params: Mapping[str, Tensor],
    u: Any,
    hv: list[Tensor],
    yv: list[Tensor | None],
    template: Any,
) -> list[Tensor | None]:
    """Tangents of the new state for an all-ones tangent on the parameters of ``direction``."""
    order = iter(graph.step_relations)

    def inject(call: LinearCall, default: Any) -> Tensor:
        return some(yv[next(order)])

    with fwAD.dual_level(), torch.no_grad():
        duals = {
            prefix + p.name: fwAD.make_dual(params[p.name], torch.ones_like(params[p.name]))
            for p in direction
        }
        with intercept_linears(params, inject):
            _, new_state = functional_call(module, duals, (u, tree_unflatten(template, hv)))
        return [fwAD.unpack_dual(leaf).tangent for leaf in tree_leaves(new_state)]
