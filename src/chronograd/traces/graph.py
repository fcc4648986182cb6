"""The compiled trace graph: relations, hidden groups, and the Jacobians of each step.

For a step ``(o_t, h_t) = f(h_{t-1}, x_t; θ)`` whose trainable weights enter through relations
``y_r = W_r z_r + b_r`` (see :mod:`chronograd.traces.intercept`), :meth:`TraceGraph.run` runs a
block of steps, each from the (detached) state the previous one produced, with every relation
output *cut* (computed, then handed on as a fresh autograd leaf), and returns per step:

* ``D_t``  (per hidden group, ``(B, H, S, S)``): each neuron's own block of ``∂h_t/∂h_{t-1}``
  with the relation outputs held fixed (recurrent matmuls are cut: a tanh RNN has ``D = 0``,
  a leaky unit ``α``, a GRU ``z`` with PyTorch's ``h = (1 - z) n + z h_{t-1}``);
* ``Df_t`` (per relation, ``(B, H, S)``): ``∂h_t/∂y_r`` of the neurons it feeds;
* ``Dp_t`` (per per-neuron parameter and group, ``(B, H, S)``): ``∂h_t/∂p``;
* with a loss, the learning signal ``δ_t`` (partial within a group, total across groups) and,
  in previous-state mode, ``δ^prev_t`` (:mod:`chronograd.traces.signal`).

The Jacobians come from :mod:`chronograd.traces.jacobians`; the loss of the whole block is
evaluated once and differentiated in one backward pass (plus one per relation the signal has
to cross), which keeps the per-step Python overhead small. When every group has analytic
Jacobians and no relation feeds a group its own new state within a step, the steps run uncut
(``graph.uncut``) and ``δ`` is a plain backward pass.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from chronograd._tree import detach, tree_leaves, tree_stack, tree_unflatten
from chronograd.traces import jacobians, signal
from chronograd.traces.groups import HiddenGroup
from chronograd.traces.intercept import LinearCall, intercept_linears
from chronograd.traces.structure import (
    Chunk,
    NeuronParam,
    Record,
    Relation,
    TraceBlock,
    TraceStep,
    some,
)

LossFn = Callable[[Any], Tensor]


class TraceGraph:
    """The eligibility-trace structure of a model, compiled by :func:`compile_graph`.

    Inspect it with ``repr(graph)``: the relations, hidden groups, per-neuron and output
    parameters found. Run it with :meth:`prepare` (once per chunk) and :meth:`run` (per block
    of steps), or :meth:`solve` for a single step.

    Attributes:
        relations: every linear call with a parameter weight, in call order (hoisted first).
        groups: the hidden groups.
        neuron_params: per-neuron (element-wise or shared) parameters with exact traces.
        output_params: trained parameters that act on the output only (exact same-step grad).
        trained: names of the trained parameters.
        hoisted: whether the model's input map runs for a whole block of steps at once.
        intra: per group, ``{c: (a, ...)}``: ``h^c_t`` depends on ``h^a_t`` within a step.
        analytic: the groups whose ``D``/``Df`` come in closed form (:mod:`.analytic`).
        step_relations, input_relations, state_relations, sweep_relations: relation indices
            called in the step, in the hoisted input map, feeding a group (trained), and whose
            input depends on the step's new state.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        relations: Sequence[Relation],
        groups: Sequence[HiddenGroup],
        neuron_params: Sequence[NeuronParam],
        output_params: Sequence[str],
        trained: Sequence[str],
        hoisted: bool,
        intra: dict[int, dict[int, tuple[int, ...]]],
        analytic: frozenset[int] = frozenset(),
        uncut: bool = False,
    ) -> None:
        self._model = weakref.ref(model)
        self._kind = type(model).__name__
        self.relations = tuple(relations)
        self.groups = tuple(groups)
        self.neuron_params = tuple(neuron_params)
        self.output_params = tuple(output_params)
        self.trained = tuple(trained)
        self.hoisted = hoisted
        self.intra = intra  # group -> {c: (a, ...)}: h^c_t depends on h^a_t within the step
        self.analytic = analytic  # groups whose D/Df come in closed form (traces.analytic)
        self._uncut_ok = uncut
        self._owners: list[nn.Module] | None = None
        rels = list(enumerate(self.relations))
        self.step_relations = [i for i, r in rels if not r.hoisted]
        self.input_relations = [i for i, r in rels if r.hoisted]
        self.state_relations = [i for i, r in rels if r.group is not None]
        self.sweep_relations = [i for i, r in rels if r.sweep and not r.hoisted]
        self.directions = _pack(self.neuron_params)

    @property
    def uncut(self) -> bool:
        """Run the step uncut: δ is then one backward pass, with no relation sweep.

        Allowed when every group's ``D``/``Df`` is analytic (no cut-graph Jacobian is needed)
        and no relation feeds a group its own new state within a step.
        """
        return self._uncut_ok and len(self.analytic) == len(self.groups)

    def owners(self) -> list[nn.Module]:
        """The cell owning each group (cached)."""
        if self._owners is None:
            model = self.model
            self._owners = [model.get_submodule(g.owner) for g in self.groups]
        return self._owners

    # -- inspection -----------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        """The model the graph was compiled for (``RuntimeError`` once it was freed)."""
        m = self._model()
        if m is None:
            raise RuntimeError("the model this trace graph was compiled for no longer exists")
        return m

    def __repr__(self) -> str:
        lines = [f"TraceGraph({self._kind}, hoisted={self.hoisted}, uncut={self.uncut})"]
        lines.append("  hidden groups:")
        for i, g in enumerate(self.groups):
            how = "analytic D/Df" if i in self.analytic else "D/Df by autodiff"
            lines.append(f"    [{i}] {g.name}: H={g.size}, S={g.S} ({', '.join(g.fields)}), {how}")
        lines.append("  relations:")
        for r in self.relations:
            where = f"-> group {r.group}" if r.group is not None else "-> output"
            if not r.trained:
                where = "(frozen, cut)"
            flags = [s for s, on in (("hoisted", r.hoisted), ("direct", r.direct)) if on]
            bias = f" + {r.bias}" if r.bias else ""
            lines.append(
                f"    {r.weight}{bias} [{r.form}] {r.in_features}->{r.out_features} {where}"
                + (f" ({', '.join(flags)})" if flags else "")
            )
        for p in self.neuron_params:
            kind = "shared" if p.shared else "per-neuron"
            lines.append(f"  neuron parameter {p.name} ({kind}) -> groups {list(p.groups)}")
        for n in self.output_params:
            lines.append(f"  output parameter {n} (exact same-step gradient)")
        return "\n".join(lines)

    # -- running --------------------------------------------------------------------------------
    def prepare(self, xs: Tensor) -> Chunk:
        """Apply hoisted input maps to a chunk ``xs`` (T, B, I) (one matmul per relation)."""
        model = self.model
        T = xs.shape[0]
        ys: list[Tensor | None] = [None] * len(self.relations)
        zs: list[Tensor | None] = [None] * len(self.relations)
        params = dict(model.named_parameters())
        if not self.hoisted:
            return Chunk(xs, list(xs.unbind(0)), ys, zs, params)
        with torch.no_grad(), intercept_linears(params) as rec:
            u = model.input_map(xs)  # type: ignore[operator]
        self._check_calls(rec.calls, self.input_relations)
        leaves = tree_leaves(u)
        for k, i in enumerate(self.input_relations):
            ys[i] = leaves[self.relations[i].leaf]  # type: ignore[index]
            zs[i] = rec.calls[k].input  # (T, B, I): the relation's actual input
        parts = [leaf.unbind(0) for leaf in leaves]
        steps = [tree_unflatten(u, [p[t] for p in parts]) for t in range(T)]
        return Chunk(xs, steps, ys, zs, params)

    def _check_calls(self, calls: Sequence[LinearCall], which: Sequence[int]) -> None:
        names = [c.weight for c in calls]
        want = [self.relations[i].weight for i in which]
        if names != want:
            raise ValueError(
                f"the step's linear calls changed since the trace graph was compiled: expected "
                f"{want}, got {names}. The eligibility-trace rules need the same relation calls "
                "at every step (no data-dependent control flow around them)"
            )

    def _step_fn(self, model: nn.Module) -> Callable[[Any, Any], tuple[Any, Any]]:
        return model.step if self.hoisted else model  # type: ignore[return-value]

    def _u_with(self, u: Any, ys: list[Tensor | None]) -> Any:
        """The step input with the hoisted relation outputs replaced by the given tensors."""
        if not self.input_relations:
            return u
        leaves = list(tree_leaves(u))
        for i in self.input_relations:
            leaves[self.relations[i].leaf] = some(ys[i])  # type: ignore[index]
        return tree_unflatten(u, leaves)

    def run(
        self,
        chunk: Chunk,
        start: int,
        stop: int,
        state: Any,
        *,
        loss: LossFn | None = None,
        learning_signal: bool = True,
        multi_step: bool = False,
        readout: tuple[int, int] | None = None,
    ) -> TraceBlock:
        """Run steps ``[start, stop)`` of a prepared chunk from ``state`` (a block).

        Args:
            chunk: from :meth:`prepare`.
            start, stop: the block's steps within the chunk.
            state: the state before the block.
            loss: ``loss(outputs) -> Σ_k ℓ_k`` for the block's stacked outputs ``(K, B, ...)``
                (weighted per step as the rule wants); with it ``δ`` and the exact same-step
                gradients are computed.
            learning_signal: False skips the backward passes for ``δ`` (every step of the
                block has zero loss weight); ``delta`` is then None.
            multi_step: also compute ``δ^prev`` (D-RTRL's ``mode="previous-state"``; needs ``loss``).
            readout: ``(relation, group)``: also return ``TraceBlock.readout`` for the group
                whose output is the input of that (readout) relation
                (:func:`~chronograd.traces.signal.readout_signal`).
        """
        rec = Record()
        for t in range(start, stop):
            state = self._forward(chunk, t, state, rec)
        D, Df = jacobians.cut_jacobians(self, rec)
        Dp = jacobians.neuron_jacobians(self, rec, chunk.params)
        K = len(rec.new)
        inputs = tuple(
            None
            if not r.trained
            else some(chunk.zs[i])[start:stop]  # hoisted: already (K, B, I)
            if r.hoisted
            else torch.stack([some(rec.zs[k][i]).detach() for k in range(K)])
            for i, r in enumerate(self.relations)
        )
        outs = tree_stack(rec.outs)
        delta = delta_prev = None
        exact: dict[str, Tensor] = {}
        ell = None
        live = False
        if loss is not None:
            ell = loss(outs)
            live = learning_signal and ell.requires_grad
            if live:
                delta, exact = signal.learning_signal(self, rec, ell, chunk.params, Df, Dp)
                if multi_step:
                    delta_prev = signal.previous_signal(self, rec, ell, delta)
        filt = None
        if readout is not None:
            rel, group = readout
            filt = signal.readout_signal(self, rec, ell if live else None, chunk.params, rel, group)
        ell = None if ell is None else ell.detach()
        return TraceBlock(
            detach(outs), state, ell, inputs, D, Df, Dp, delta, delta_prev, exact, filt
        )

    def _forward(self, chunk: Chunk, t: int, state: Any, rec: Record) -> Any:
        """Step ``t`` with its relation outputs cut (or recorded, uncut); returns the new state."""
        model = self.model
        # the previous state is a graph leaf so that every new state tensor is in the graph
        # (a state that depends on the previous state only must still pass δ on)
        h_prev = [leaf.detach().requires_grad_(True) for leaf in tree_leaves(state)]
        n = len(self.relations)
        ys: list[Tensor | None] = [None] * n
        full: list[Tensor | None] = [None] * n
        zs: list[Tensor | None] = [None] * n
        for i in self.input_relations:
            ys[i] = some(chunk.ys[i])[t].detach().requires_grad_(True)
            zs[i] = some(chunk.zs[i])[t]
        order = iter(self.step_relations)
        uncut = self.uncut

        def cut(call: LinearCall, default: Callable[[], Tensor]) -> Tensor:
            i = next(order, None)
            if i is None or self.relations[i].weight != call.weight:
                raise ValueError(
                    f"unexpected relation call {call.weight!r} at position {call.position}: the "
                    "step's linear calls changed since the trace graph was compiled"
                )
            y = default()
            full[i], zs[i] = y, call.input
            ys[i] = y if uncut else y.detach().requires_grad_(True)
            return some(ys[i])

        u = self._u_with(chunk.u[t], ys)
        with torch.enable_grad(), intercept_linears(chunk.params, cut):
            out, new_state = self._step_fn(model)(u, tree_unflatten(state, h_prev))
        if next(order, None) is not None:
            raise ValueError("the step made fewer relation calls than when it was compiled")
        rec.h_prev.append(h_prev)
        rec.new.append(tree_leaves(new_state))
        rec.ys.append(ys)
        rec.full.append(full)
        rec.zs.append(zs)
        rec.outs.append(out)
        rec.us.append(u)
        rec.states.append(state)
        return detach(new_state)

    def solve(
        self,
        x: Tensor,
        state: Any,
        *,
        loss: LossFn | None = None,
        multi_step: bool = False,
    ) -> TraceStep:
        """One step from ``x`` (B, I): outputs, new state, ``D``, ``Df`` (and ``δ`` with a loss).

        ``loss(outputs) -> ℓ`` takes the step's outputs (no time axis).
        """
        block_loss = None if loss is None else (lambda outs: loss(_first(outs)))
        b = self.run(
            self.prepare(x.unsqueeze(0)), 0, 1, state, loss=block_loss, multi_step=multi_step
        )

        def first(xs: Sequence[Any] | None) -> Any:
            return None if xs is None else tuple(None if v is None else v[0] for v in xs)

        return TraceStep(
            _first(b.outputs), b.state, b.loss, first(b.inputs), first(b.D), first(b.Df),
            {k: v[0] for k, v in b.Dp.items()}, first(b.delta), first(b.delta_prev), b.exact,
        )  # fmt: skip


def _first(tree: Any) -> Any:
    """Step 0 of a block's stacked tree."""
    from chronograd._tree import tree_index

    return tree_index(tree, 0)


def _pack(params: Sequence[NeuronParam]) -> list[list[NeuronParam]]:
    """Group per-neuron parameters into JVP directions, no two in a direction sharing a group."""
    directions: list[list[NeuronParam]] = []
    for p in params:
        for d in directions:
            if not {g for q in d for g in q.groups} & set(p.groups):
                d.append(p)
                break
        else:
            directions.append([p])
    return directions
