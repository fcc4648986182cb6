"""Compile a model's trace graph: find relations, groups and parameters, and check they fit.

:func:`compile_graph` runs one step of a float64 copy of the model at a random state and
classifies every trained parameter by *probing* (forward-mode JVPs with all-ones and random
tangents, and reverse-mode structure of the step with every relation output cut):

* **state relation**: a linear call ``y = W z + b`` whose output unit ``h`` feeds neuron ``h``
  of exactly one hidden group, element-wise (checked with a random tangent on ``y``);
* **output relation**: a linear call that reaches no state (a stateless readout): exact
  same-step gradient;
* **per-neuron parameter**: acts on each neuron separately (shape ``(H,)``, e.g. a learnable
  decay) or on all alike (a scalar): an exact trace ``(B, H, S)`` each;
* **output parameter**: any other parameter that reaches only the output: exact same-step
  gradient.

It raises ``TypeError`` naming the parameter, the reason and the fix when the model does not fit:
a weight multiplied from the left (``W @ z``), a relation input that is not ``(B, I)``, dense
mixing after the matmul (``y`` reaching several neurons), a relation feeding two groups, a
weight that reaches the state only through another relation (``Stack(Map(nn.Linear), LIF)``:
its gradient needs the second weight's full Jacobian, which D-RTRL does not keep), a state that
mixes neurons or groups other than through a relation, a parameter that changes the state but
is neither a relation weight nor per-neuron. Probing happens at one random point, so a path
whose derivative vanishes there (a surrogate gradient outside its support) can go unseen; the
probe state is the given one plus standard normal noise, which puts about half of the neurons
of a unit-threshold spiking cell inside the surrogate's support.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from chronograd.cells.base import check_cell
from chronograd.traces.analytic import analytic_jacobians
from chronograd.traces.graph import TraceGraph
from chronograd.traces.groups import HiddenGroup, hidden_groups
from chronograd.traces.intercept import LinearCall
from chronograd.traces.probe import Probe, close, group_hits, nonzero, stack_group
from chronograd.traces.signal import group_signal
from chronograd.traces.structure import NeuronParam, Relation, reduce_to

_FIX = "train it with RTRL, BPTT or TBPTT, or leave it out of the rule's params"


def _check_groups(probe: Probe, groups: Sequence[HiddenGroup]) -> list[Tensor]:
    """Each group's state depends only on itself, element-wise per neuron; returns probe ``D``."""
    Ds = []
    gen = torch.Generator().manual_seed(7)
    for gi, g in enumerate(groups):
        cols = []
        for c, leaf in enumerate(g.leaves):
            tn, _, _ = probe.jvp(th={leaf: torch.ones_like(probe.h0[leaf])})
            for gj in group_hits(groups, tn):
                if gj != gi:
                    raise TypeError(
                        f"the state of {groups[gj].name} depends on {g.name} ({g.fields[c]}) "
                        "within a step other than through a relation (a linear call with a "
                        "parameter weight). The trace engine needs groups coupled only through "
                        f"relations; route the coupling through nn.Linear/F.linear, or {_FIX}"
                    )
            cols.append(stack_group(g, tn))
        D = torch.stack(cols, -1)  # (B, H, S, S): D[..., a, c]
        rho = {k: torch.randn(probe.h0[k].shape, generator=gen).to(probe.h0[k]) for k in g.leaves}
        tn, _, _ = probe.jvp(th=rho)
        want = (D * torch.stack([rho[k] for k in g.leaves], -1).unsqueeze(-2)).sum(-1)
        if not close(stack_group(g, tn), want):
            raise TypeError(
                f"the state of {g.name} mixes neurons within a step: with every relation output "
                "held fixed, ∂h_t/∂h_(t-1) is not diagonal per neuron (a dense map of the state "
                "that is not a linear call with a parameter weight, e.g. a buffer matrix, an "
                "einsum or a normalisation over neurons). Fix: write the mixing as "
                f"nn.Linear/F.linear with a parameter so it becomes a relation, or {_FIX}"
            )
        Ds.append(D)
    return Ds


def _relation_group(
    probe: Probe, groups: Sequence[HiddenGroup], i: int, call: LinearCall
) -> tuple[int | None, Tensor | None]:
    """The group relation ``i`` feeds and its probe ``Df`` (None, None for an output relation)."""
    y = probe.y0[i]
    tn, _, tz = probe.jvp(ty={i: torch.ones_like(y)})
    hits = group_hits(groups, tn)
    if len(hits) > 1:
        raise TypeError(
            f"the output of relation {call.weight!r} feeds several hidden groups "
            f"({', '.join(groups[g].name for g in hits)}); each output unit of a relation must "
            "feed one neuron of one group. Fix: give each group its own nn.Linear, or " + _FIX
        )
    if not hits:
        tn_u, _, _ = probe.jvp(ty={i: torch.ones_like(y)}, cut={i})
        if any(nonzero(t) for t in tn_u):
            via = [
                probe.calls[probe.n_in + k].weight
                for k, t in enumerate(tz)
                if nonzero(t) and probe.n_in + k != i
            ]
            raise TypeError(
                f"weight {call.weight!r} reaches the hidden state only through another "
                f"relation ({', '.join(via) or 'a later linear call'}): its output is the input "
                "of a second linear map, so its gradient needs that map's full Jacobian, which "
                "D-RTRL and pp-prop do not keep. Fix: fold the two linear maps into one (drop "
                "the Map(nn.Linear) in front of the cell), freeze it (exclude it from the rule's "
                "params), or train the model with RTRL, BPTT or TBPTT"
            )
        return None, None
    g = groups[hits[0]]
    if y.dim() != 2 or y.shape[-1] != g.size:
        raise TypeError(
            f"relation {call.weight!r} gives outputs of shape {tuple(y.shape)} but feeds "
            f"{g.name} of {g.size} neurons; a relation needs one output per neuron, (B, {g.size})"
        )
    Df = stack_group(g, tn)
    rho = torch.randn(y.shape, generator=torch.Generator().manual_seed(11)).to(y)
    tn2, _, _ = probe.jvp(ty={i: rho})
    if not close(stack_group(g, tn2), Df * rho.unsqueeze(-1)):
        raise TypeError(
            f"the output of relation {call.weight!r} is mixed across neurons before it reaches "
            f"{g.name} (a dense map after the matmul, e.g. a second matrix, a softmax or a "
            "normalisation over units): output unit h must feed neuron h only. Fix: make the "
            f"mixing part of the relation's weight, or {_FIX}"
        )
    return hits[0], Df


def _neuron_param(
    probe: Probe, groups: Sequence[HiddenGroup], name: str
) -> tuple[tuple[int, ...], dict[int, Tensor]]:
    """Groups a non-relation parameter changes, with its probe ``Dp`` per group."""
    p = probe.params[name]
    tn, _, tz = probe.jvp(tp={name: torch.ones_like(p)})
    hits = group_hits(groups, tn)
    if not hits:
        tn_u, _, _ = probe.jvp(tp={name: torch.ones_like(p)}, cut=set())
        if any(nonzero(t) for t in tn_u):
            via = [probe.calls[probe.n_in + k].weight for k, t in enumerate(tz) if nonzero(t)]
            raise TypeError(
                f"parameter {name!r} reaches the hidden state only through a relation's input "
                f"({', '.join(via) or 'a linear call'}), so its trace would need that "
                f"relation's full Jacobian. Fix: apply it after the linear map (per neuron), or "
                + _FIX
            )
        return (), {}
    Dps = {}
    for gi in hits:
        g = groups[gi]
        Dp = stack_group(g, tn)
        if p.numel() != 1:
            if tuple(p.shape) != (g.size,):
                raise TypeError(
                    f"parameter {name!r} of shape {tuple(p.shape)} changes the state of "
                    f"{g.name} but is neither a relation weight (used in nn.Linear/F.linear/a "
                    f"matmul) nor per-neuron (shape ({g.size},) or a scalar). Fix: use it "
                    f"through F.linear, make it per-neuron, or {_FIX}"
                )
            rho = torch.randn(p.shape, generator=torch.Generator().manual_seed(13)).to(p)
            tn2, _, _ = probe.jvp(tp={name: rho})
            if not close(stack_group(g, tn2), Dp * rho[None, :, None]):
                raise TypeError(
                    f"parameter {name!r} of shape ({g.size},) does not act on each neuron of "
                    f"{g.name} separately (element h must affect neuron h only). Fix: {_FIX}"
                )
        Dps[gi] = Dp
    return tuple(hits), Dps


def compile_graph(
    model: nn.Module, x: Tensor, state: Any, trained: Sequence[str] | None = None
) -> TraceGraph:
    """Compile the trace graph of ``model`` (see the module docstring).

    Args:
        model: a chronograd cell (typically a :class:`~chronograd.cells.Stack`).
        x: one step's input ``(B, I)``.
        state: a state of the model for ``B`` sequences.
        trained: names of the trained parameters (default: all with ``requires_grad``).

    Raises:
        TypeError: the model does not fit the engine (the message names the reason and fix).
    """
    check_cell(model, "model")
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(
            f"x must be one step's input of shape (B, I), got {getattr(x, 'shape', x)}"
        )
    named = dict(model.named_parameters())
    trained = [n for n, p in named.items() if p.requires_grad] if trained is None else list(trained)
    groups = hidden_groups(model, state, int(x.shape[0]))
    probe = Probe(model, x, state, trained)
    rel_params = {c.weight for c in probe.calls} | {c.bias for c in probe.calls if c.bias}
    for c in probe.calls:
        if c.form == "left" and (c.weight in probe.trained):
            raise TypeError(
                f"relation {c.weight!r} multiplies its input from the left (W @ z); the trace "
                "engine needs the presynaptic dimension last. Fix: write it as F.linear(z, W) "
                f"or z @ W.T, or {_FIX}"
            )
    Dprobe = _check_groups(probe, groups)
    rels: list[dict[str, Any]] = []
    Dfs: dict[int, Tensor] = {}
    for i, c in enumerate(probe.calls):
        trained_r = c.weight in probe.trained or (c.bias is not None and c.bias in probe.trained)
        group = None
        if trained_r:
            if c.input.dim() != 2:
                raise TypeError(
                    f"relation {c.weight!r} has input of shape {tuple(c.input.shape)}; the trace "
                    "engine needs (B, I) inputs per step. Fix: flatten the input first, or " + _FIX
                )
            group, Df = _relation_group(probe, groups, i, c)
            if Df is not None:
                Dfs[i] = Df
        rels.append(dict(call=c, group=group, trained=trained_r))
    cands = [n for n in trained if n not in rel_params]
    nparams: dict[str, tuple[tuple[int, ...], dict[int, Tensor]]] = {}
    outputs: list[str] = []
    for n in cands:
        hits, Dps = _neuron_param(probe, groups, n)
        if hits:
            nparams[n] = (hits, Dps)
        else:
            outputs.append(n)
    intra, sweep, direct_r, direct_p, no_loops = _structure(
        probe, groups, rels, nparams, Dfs, cands
    )
    analytic = _analytic_groups(probe, groups, rels, Dprobe, Dfs)
    relations = [
        Relation(
            weight=r["call"].weight,
            bias=r["call"].bias,
            form=r["call"].form,
            hoisted=i < probe.n_in,
            position=r["call"].position,
            leaf=probe.leaf_of.get(i),
            group=r["group"],
            trained=r["trained"],
            direct=i in direct_r,
            sweep=i in sweep,
            in_features=int(r["call"].input.shape[-1]),
            out_features=int(probe.y0[i].shape[-1]),
        )
        for i, r in enumerate(rels)
    ]
    neuron = [
        NeuronParam(n, hits, named[n].numel() == 1, n in direct_p)
        for n, (hits, _) in nparams.items()
    ]
    return TraceGraph(
        model,
        relations=relations,
        groups=groups,
        neuron_params=neuron,
        output_params=outputs,
        trained=trained,
        hoisted=probe.hoisted,
        intra=intra,
        analytic=analytic,
        uncut=no_loops,
    )


def _analytic_groups(
    probe: Probe,
    groups: Sequence[HiddenGroup],
    rels: list[dict[str, Any]],
    Dprobe: list[Tensor],
    Dfs: dict[int, Tensor],
) -> frozenset[int]:
    """Groups whose closed-form ``D``/``Df`` agree with autodiff at the probe state."""
    with torch.no_grad():
        new, _, _ = probe.run(probe.h0, probe.y0, {}, set())
    ok = set()
    for gi, g in enumerate(groups):
        cell = probe.model.get_submodule(g.owner)
        prev = {f: probe.h0[k] for f, k in zip(g.fields, g.leaves)}
        nxt = {f: new[k] for f, k in zip(g.fields, g.leaves)}
        got = analytic_jacobians(cell, prev, nxt)
        if got is None or not close(got[0], Dprobe[gi]):
            continue
        if all(close(got[1], Dfs[i]) for i, r in enumerate(rels) if r["group"] == gi):
            ok.add(gi)
    return frozenset(ok)


def _structure(
    probe: Probe,
    groups: Sequence[HiddenGroup],
    rels: list[dict[str, Any]],
    nparams: dict[str, tuple[tuple[int, ...], dict[int, Tensor]]],
    Dfs: dict[int, Tensor],
    cands: Sequence[str],
) -> tuple[dict[int, dict[int, tuple[int, ...]]], set[int], set[int], set[str], bool]:
    """Reverse-mode structure of the cut step: intra-group dependencies, sweep and direct flags.

    The last value says whether no relation feeds a group its own new state within a step
    (then the learning signal may be taken on the uncut step, see ``TraceGraph.uncut``).
    """
    h = [t.clone().requires_grad_(True) for t in probe.h0]
    ys = [y.clone().requires_grad_(True) for y in probe.y0]
    pvals = {n: probe.params[n].detach().clone().requires_grad_(True) for n in cands}
    with torch.enable_grad():
        new, out, zs = probe.run(h, ys, pvals, set(range(len(ys))))
    intra: dict[int, dict[int, tuple[int, ...]]] = {}
    for gi, g in enumerate(groups):
        deps: dict[int, tuple[int, ...]] = {}
        for c, lc in enumerate(g.leaves):
            if not new[lc].requires_grad:
                continue
            others = [a for a in range(g.S) if a != c]
            if not others:
                continue
            gs = torch.autograd.grad(
                new[lc], [new[g.leaves[a]] for a in others], torch.ones_like(new[lc]),
                retain_graph=True, allow_unused=True,
            )  # fmt: skip
            found = tuple(a for a, gr in zip(others, gs) if gr is not None)
            if found:
                deps[c] = found
        if deps:
            intra[gi] = deps
    group_leaves = [k for g in groups for k in g.leaves]
    targets = [new[k] for k in group_leaves] + ys + list(pvals.values())
    sweep: set[int] = set()
    loops = False  # a relation whose input depends on the group it feeds, within one step
    for k, z in enumerate(zs):
        if z.requires_grad:
            gs = torch.autograd.grad(
                z, targets, torch.ones_like(z), retain_graph=True, allow_unused=True
            )
            if any(gr is not None for gr in gs):  # structural: None means no path at all
                sweep.add(probe.n_in + k)
            i = probe.n_in + k
            tn, _, _ = probe.jvp(ty={i: torch.ones_like(probe.y0[i])})
            fed = set(group_hits(groups, tn))
            pos = {leaf: j for j, leaf in enumerate(group_leaves)}
            for gi in fed:
                if any(gs[pos[leaf]] is not None for leaf in groups[gi].leaves):
                    loops = True
    # direct paths: random cotangents on the outputs, then on the relation inputs
    gen = torch.Generator().manual_seed(17)
    direct_r: set[int] = set()
    direct_p: set[str] = set()
    state_r = [i for i in Dfs]
    state_p = list(nparams)
    for kind, roots in (("output", list(out)), ("relation input", list(zs))):
        roots = [r for r in roots if r.requires_grad and r.is_floating_point()]
        if not roots:
            continue
        cots = [torch.randn(r.shape, generator=gen).to(r) for r in roots]
        ins = (
            [new[k] for k in group_leaves] + [ys[i] for i in state_r] + [pvals[n] for n in state_p]
        )
        gs = torch.autograd.grad(roots, ins, cots, retain_graph=True, allow_unused=True)
        g_new: list[Tensor] = list(probe.h0)
        for k, leaf in enumerate(group_leaves):
            g_new[leaf] = torch.zeros_like(new[leaf]) if gs[k] is None else gs[k]
        delta = [
            group_signal(g, intra.get(gi), [g_new[j].unsqueeze(0) for j in g.leaves], [new])[0]
            for gi, g in enumerate(groups)
        ]
        off = len(group_leaves)
        for k, i in enumerate(state_r):
            gy = gs[off + k]
            total = torch.zeros_like(ys[i]) if gy is None else gy
            via = (delta[rels[i]["group"]] * Dfs[i]).sum(-1)
            if not close(total, via):
                if kind == "output":
                    direct_r.add(i)
                else:
                    raise TypeError(
                        f"the output of relation {rels[i]['call'].weight!r} reaches another "
                        "relation's input other than through the state it feeds; its gradient "
                        f"would need that relation's full Jacobian. Fix: {_FIX}"
                    )
        off += len(state_r)
        for k, n in enumerate(state_p):
            gp = gs[off + k]
            total = torch.zeros_like(pvals[n]) if gp is None else gp
            hits, Dps = nparams[n]
            via = sum(reduce_to(delta[gi] * Dps[gi], pvals[n]) for gi in hits)
            if not close(total, via):  # type: ignore[arg-type]
                if kind == "output":
                    direct_p.add(n)
                else:
                    raise TypeError(
                        f"parameter {n!r} reaches a relation's input other than through the "
                        f"state; its gradient would need that relation's full Jacobian. Fix: {_FIX}"
                    )
    return intra, sweep, direct_r, direct_p, not loops
