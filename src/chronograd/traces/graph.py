"""The compiled trace graph: relations, hidden groups, and the per-step Jacobians.

For a step ``(o_t, h_t) = f(h_{t-1}, x_t; θ)`` whose trainable weights enter through relations
``y_r = W_r z_r + b_r`` (see :mod:`chronograd.traces.intercept`), one call of
:meth:`TraceGraph.step` runs the step once with every relation output *cut* (computed, then
handed on as a fresh autograd leaf), which gives, per step:

* ``D_t``  (per hidden group, ``(B, H, S, S)``): each neuron's own block of ``∂h_t/∂h_{t-1}``
  with the relation outputs held fixed (recurrent matmuls are cut: a tanh RNN has ``D = 0``,
  a leaky unit ``α``, a GRU ``1 - z``);
* ``Df_t`` (per relation, ``(B, H, S)``): ``∂h_t/∂y_r`` of the neurons it feeds;
* ``Dp_t`` (per per-neuron parameter and group, ``(B, H, S)``): ``∂h_t/∂p`` (one JVP);
* on request the learning signal ``δ_t = ∂ℓ_t/∂h_t``, *partial within a group and total
  across groups*: with ``g`` the total derivatives of ``ℓ_t`` w.r.t. the new state tensors and
  ``T[c, a] = ∂h^c_t/∂h^a_t`` the same-step Jacobian between a neuron's own state variables,
  ``g_a = δ_a + Σ_{c≠a} T[c, a] δ_c``, so ``δ = (I + T_offᵀ)^{-1} g`` per neuron (the total
  derivative would count the paths through a neuron's other state variables twice, since the
  trace already covers them). The paths that cross relations (a later layer, the readout at
  the same step) are included by sweeping the cut relations backwards, in reverse call order.
* in multi-step mode also ``δ^prev_t = ∂ℓ_t/∂h_{t-1}`` along the paths that avoid the group's
  new state: ``d/dh_{t-1} [ℓ_t - Σ_a <δ_a, h^a_t>]`` through the full (uncut) step.

``D`` and ``Df`` are read from vector-Jacobian products of the cut step with one-hot
cotangents (one per state variable, over all neurons and groups at once): with the Jacobian
block-diagonal per neuron (checked when compiling) a column sum is the block itself. This is
the same quantity as the JVP with one-hot tangents, at the cost of one small backward pass
through the element-wise part of the step instead of a ``vmap``-ed forward-mode pass (which
measured an order of magnitude slower in eager PyTorch on the CPU).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn
from torch.func import functional_call

from chronograd._tree import detach, tree_leaves, tree_unflatten
from chronograd.traces.groups import HiddenGroup
from chronograd.traces.intercept import Form, LinearCall, intercept_linears

LossFn = Callable[[Any], Tensor]


class Relation(NamedTuple):
    """One linear call ``y = W z + b`` of the step, as compiled.

    Attributes:
        weight, bias: parameter names (bias None when absent or not a parameter).
        form: ``"linear"`` (``W`` is (H, I)), ``"right"`` (``W`` is (I, H)) or ``"left"``.
        hoisted: computed for the whole chunk by the cell's ``input_map``.
        position: call position within ``input_map`` (hoisted) or the step.
        leaf: for hoisted relations, the index of ``y`` among ``input_map``'s output leaves.
        group: the hidden group ``y`` feeds (None: an output relation, or untrained).
        trained: its weight or bias is trained.
        direct: ``y`` also reaches the step's output other than through the group's state.
        sweep: its input depends on the step's new state (the learning signal crosses it).
        in_features, out_features: ``I`` and ``H``.
    """

    weight: str
    bias: str | None
    form: Form
    hoisted: bool
    position: int
    leaf: int | None
    group: int | None
    trained: bool
    direct: bool
    sweep: bool
    in_features: int
    out_features: int


class NeuronParam(NamedTuple):
    """A parameter that acts on each neuron separately (``(H,)``) or on all alike (a scalar).

    Attributes:
        name: the parameter's name.
        groups: the hidden groups whose state it changes.
        shared: a single value for all neurons (numel 1).
        direct: it also reaches the step's output other than through the state.
    """

    name: str
    groups: tuple[int, ...]
    shared: bool
    direct: bool


class TraceStep(NamedTuple):
    """What :meth:`TraceGraph.step` returns for one step.

    Attributes:
        outputs: the step's outputs (detached).
        state: the new state (detached).
        loss: ``ℓ_t`` (detached scalar) when a loss was given, else None.
        inputs: per relation, its input ``z_t`` (B, I) (None for untrained relations).
        D: per hidden group, ``(B, H, S, S)``: ``D[b, h, a, c] = ∂h^a_t[b,h]/∂h^c_{t-1}[b,h]``.
        Df: per relation, ``(B, H, S)`` for trained state relations (else None).
        Dp: ``{(param, group): (B, H, S)}`` for per-neuron parameters.
        delta: per group, ``(B, H, S)`` learning signal (None without a loss).
        delta_prev: per group, ``(B, H, S)`` multi-step signal (None unless requested).
        exact: ``{param: grad}`` exact same-step gradients (output relations and parameters,
            and the direct terms of relations/parameters that also reach the output).
    """

    outputs: Any
    state: Any
    loss: Tensor | None
    inputs: tuple[Tensor | None, ...]
    D: tuple[Tensor, ...]
    Df: tuple[Tensor | None, ...]
    Dp: dict[tuple[str, int], Tensor]
    delta: tuple[Tensor, ...] | None
    delta_prev: tuple[Tensor, ...] | None
    exact: dict[str, Tensor]


class StepOf(nn.Module):
    """Wraps a hoisted cell so ``functional_call`` can run ``cell.step(u, state)``."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, u: Any, state: Any) -> tuple[Any, Any]:
        return self.cell.step(u, state)  # type: ignore[operator]


class Chunk(NamedTuple):
    """A chunk's inputs prepared for :meth:`TraceGraph.step` (hoisted input maps applied).

    Attributes:
        xs: ``(T, B, I)`` raw inputs.
        u: per-step step inputs: ``input_map(xs)`` split over time, or ``xs`` split over time.
        ys: per relation, ``(T, B, H)`` outputs of hoisted relations (None for step relations).
    """

    xs: Tensor
    u: list[Any]
    ys: list[Tensor | None]


def relation_grads(rel: Relation, z: Tensor, gy: Tensor) -> dict[str, Tensor]:
    """``∂/∂W`` and ``∂/∂b`` of ``<gy, W z + b>`` for a batch: ``z`` (B, I), ``gy`` (B, H)."""
    out = {rel.weight: gy.t() @ z if rel.form == "linear" else z.t() @ gy}
    if rel.bias is not None:
        out[rel.bias] = gy.sum(0)
    return out


def _add(acc: dict[str, Tensor], more: dict[str, Tensor]) -> None:
    for k, v in more.items():
        acc[k] = acc[k] + v if k in acc else v


class TraceGraph:
    """The eligibility-trace structure of a model, compiled by :func:`compile_graph`.

    Inspect it with ``repr(graph)``: the relations, hidden groups, per-neuron and output
    parameters found. Run it with :meth:`prepare` (once per chunk) and :meth:`step` (per step),
    or :meth:`solve` for a single step.

    Attributes:
        relations: every linear call with a parameter weight, in call order (hoisted first).
        groups: the hidden groups.
        neuron_params: per-neuron (element-wise or shared) parameters with exact traces.
        output_params: trained parameters that act on the output only (exact same-step grad).
        trained: names of the trained parameters.
        hoisted: whether the model's input map runs for the whole chunk at once.
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
        n_leaves: int,
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
        self.n_leaves = n_leaves
        self._step_rel = [i for i, r in enumerate(self.relations) if not r.hoisted]
        self._in_rel = [i for i, r in enumerate(self.relations) if r.hoisted]
        self._state_rel = [i for i, r in enumerate(self.relations) if r.group is not None]
        self._sweep_rel = [i for i, r in enumerate(self.relations) if r.sweep and not r.hoisted]
        self._graph_rel = [i for i in self._step_rel]
        self.S_max = max((g.S for g in self.groups), default=0)
        self._directions = _pack(self.neuron_params)

    # -- inspection -----------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        m = self._model()
        if m is None:
            raise RuntimeError("the model this trace graph was compiled for no longer exists")
        return m

    def __repr__(self) -> str:
        lines = [f"TraceGraph({self._kind}, hoisted={self.hoisted})"]
        lines.append("  hidden groups:")
        for i, g in enumerate(self.groups):
            lines.append(f"    [{i}] {g.name}: H={g.size}, S={g.S} ({', '.join(g.fields)})")
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
        if not self.hoisted:
            return Chunk(xs, list(xs.unbind(0)), ys)
        params = dict(model.named_parameters())
        with torch.no_grad(), intercept_linears(params) as rec:
            u = model.input_map(xs)  # type: ignore[operator]
        self._check_calls(rec.calls, self._in_rel)
        leaves = tree_leaves(u)
        for i in self._in_rel:
            ys[i] = leaves[self.relations[i].leaf]  # type: ignore[index]
        parts = [leaf.unbind(0) for leaf in leaves]
        steps = [tree_unflatten(u, [p[t] for p in parts]) for t in range(T)]
        return Chunk(xs, steps, ys)

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
        if not self._in_rel:
            return u
        leaves = list(tree_leaves(u))
        for i in self._in_rel:
            leaves[self.relations[i].leaf] = _some(ys, i)  # type: ignore[index]
        return tree_unflatten(u, leaves)

    def step(
        self,
        chunk: Chunk,
        t: int,
        state: Any,
        *,
        loss: LossFn | None = None,
        multi_step: bool = False,
        need_loss_signal: bool = True,
    ) -> TraceStep:
        """Run step ``t`` of a prepared chunk from ``state`` and return its Jacobians.

        Args:
            chunk: from :meth:`prepare`.
            t: step index within the chunk.
            state: the state before the step.
            loss: ``loss(outputs) -> ℓ_t`` (a scalar, the step's weighted loss); with it the
                learning signal ``δ_t`` and the exact same-step gradients are computed.
            multi_step: also compute ``δ^prev_t`` (needs ``loss``).
            need_loss_signal: False skips the backward passes for ``δ`` (e.g. a zero-weight
                step); ``delta`` is then zeros.
        """
        model = self.model
        params = dict(model.named_parameters())
        leaves = tree_leaves(state)
        h_prev = [leaf.detach().requires_grad_(True) for leaf in leaves]
        ys: list[Tensor | None] = [None] * len(self.relations)
        full: list[Tensor | None] = [None] * len(self.relations)  # uncut y, for the sweep
        zs: list[Tensor | None] = [None] * len(self.relations)
        for i in self._in_rel:
            y = chunk.ys[i][t]  # type: ignore[index]
            ys[i] = y.detach().requires_grad_(True)
            zs[i] = chunk.xs[t]
        order = iter(self._step_rel)

        def cut(call: LinearCall, default: Callable[[], Tensor]) -> Tensor:
            i = next(order, None)
            if i is None or self.relations[i].weight != call.weight:
                raise ValueError(
                    f"unexpected relation call {call.weight!r} at position {call.position}: the "
                    "step's linear calls changed since the trace graph was compiled"
                )
            y = default()
            full[i], zs[i] = y, call.input
            ys[i] = y.detach().requires_grad_(True)
            return ys[i]  # type: ignore[return-value]

        u = self._u_with(chunk.u[t], ys)
        with torch.enable_grad(), intercept_linears(params, cut):
            out, new_state = self._step_fn(model)(u, tree_unflatten(state, h_prev))
        if next(order, None) is not None:
            raise ValueError("the step made fewer relation calls than when it was compiled")
        new = tree_leaves(new_state)
        D, Df = self._jacobians(h_prev, new, ys)
        Dp = self._neuron_jacobians(model, u, h_prev, state, ys)
        inputs = tuple(
            None if not r.trained or zs[i] is None else zs[i].detach()  # type: ignore[union-attr]
            for i, r in enumerate(self.relations)
        )
        delta = delta_prev = None
        exact: dict[str, Tensor] = {}
        ell = None
        if loss is not None:
            ell = loss(out)
            if need_loss_signal and ell.requires_grad:
                delta, exact = self._signal(ell, new, ys, full, zs, params, Df, Dp)
                if multi_step:
                    delta_prev = self._signal_prev(ell, new, h_prev, ys, full, delta)
            else:
                delta = tuple(self._zeros_signal(new, g) for g in self.groups)
                if multi_step:
                    delta_prev = delta
            ell = ell.detach()
        return TraceStep(
            detach(out), detach(new_state), ell, inputs, D, Df, Dp, delta, delta_prev, exact
        )

    def solve(
        self,
        x: Tensor,
        state: Any,
        *,
        loss: LossFn | None = None,
        multi_step: bool = False,
    ) -> TraceStep:
        """One step from ``x`` (B, I): outputs, new state, ``D``, ``Df`` (and ``δ`` with a loss)."""
        return self.step(self.prepare(x.unsqueeze(0)), 0, state, loss=loss, multi_step=multi_step)

    # -- Jacobians ------------------------------------------------------------------------------
    def _jacobians(
        self, h_prev: list[Tensor], new: list[Tensor], ys: list[Tensor | None]
    ) -> tuple[tuple[Tensor, ...], tuple[Tensor | None, ...]]:
        """``D`` per group and ``Df`` per trained state relation, by one-hot VJPs of the cut step."""
        D = [
            h_prev[g.leaves[0]].new_zeros(*h_prev[g.leaves[0]].shape, g.S, g.S) for g in self.groups
        ]
        Df: list[Tensor | None] = [None] * len(self.relations)
        rels = [i for i in self._state_rel if self.relations[i].trained]
        for i in rels:
            y = ys[i]
            assert y is not None
            Df[i] = y.new_zeros(*y.shape, self.groups[self.relations[i].group].S)  # type: ignore[index]
        for a in range(self.S_max):
            outs = [
                new[g.leaves[a]] for g in self.groups if a < g.S and new[g.leaves[a]].requires_grad
            ]
            if not outs:
                continue
            ins = [h_prev[leaf] for g in self.groups for leaf in g.leaves] + _all(ys, rels)
            grads = torch.autograd.grad(
                outs, ins, [torch.ones_like(o) for o in outs], retain_graph=True, allow_unused=True
            )
            k = 0
            for gi, g in enumerate(self.groups):
                for c in range(g.S):
                    if grads[k] is not None and a < g.S:
                        D[gi][..., a, c] = grads[k]
                    k += 1
            for i in rels:
                gy = grads[k]
                if gy is not None and a < self.groups[self.relations[i].group].S:  # type: ignore[index]
                    Df[i][..., a] = gy  # type: ignore[index]
                k += 1
        return tuple(D), tuple(Df)

    def _neuron_jacobians(
        self,
        model: nn.Module,
        u: Any,
        h_prev: list[Tensor],
        state: Any,
        ys: list[Tensor | None],
    ) -> dict[tuple[str, int], Tensor]:
        """``Dp = ∂h_t/∂p`` per (neuron parameter, group): one forward-mode pass per direction."""
        out: dict[tuple[str, int], Tensor] = {}
        if not self.neuron_params:
            return out
        params = dict(model.named_parameters())
        module = StepOf(model) if self.hoisted else model
        prefix = "cell." if self.hoisted else ""
        yv = [None if y is None else y.detach() for y in ys]
        uv = detach(self._u_with(u, yv))
        hv = [h.detach() for h in h_prev]
        for direction in self._directions:
            order = iter(self._step_rel)

            def inject(call: LinearCall, default: Any, order: Any = order) -> Tensor:
                return _some(yv, next(order))

            with fwAD.dual_level(), torch.no_grad():
                duals = {
                    prefix + p.name: fwAD.make_dual(params[p.name], torch.ones_like(params[p.name]))
                    for p in direction
                }
                with intercept_linears(params, inject):
                    _, new_state = functional_call(module, duals, (uv, tree_unflatten(state, hv)))
                tangents = [fwAD.unpack_dual(leaf).tangent for leaf in tree_leaves(new_state)]
            for p in direction:
                for gi in p.groups:
                    g = self.groups[gi]
                    cols = [
                        torch.zeros_like(hv[leaf]) if tangents[leaf] is None else tangents[leaf]
                        for leaf in g.leaves
                    ]
                    out[(p.name, gi)] = torch.stack(cols, -1)
        return out

    # -- learning signals -----------------------------------------------------------------------
    def _zeros_signal(self, new: list[Tensor], g: HiddenGroup) -> Tensor:
        ref = new[g.leaves[0]]
        return ref.new_zeros(*ref.shape, g.S)

    def _sweep(
        self,
        roots: list[Tensor],
        cots: list[Tensor],
        targets: list[Tensor],
        ys: list[Tensor | None],
        full: list[Tensor | None],
        relations: Sequence[int],
    ) -> list[Tensor | None]:
        """Gradients of ``Σ <cot, root>`` w.r.t. ``targets`` through the uncut step.

        ``targets`` must end with ``ys[i]`` for every ``i`` in ``relations`` (in that order):
        the cut relations are crossed backwards, latest call first, each with one VJP through
        its (uncut) output ``full[i]``.
        """
        grads: list[Tensor | None] = list(
            torch.autograd.grad(roots, targets, cots, retain_graph=True, allow_unused=True)
        )
        base = len(targets) - len(relations)
        for k in range(len(relations) - 1, -1, -1):
            gy = grads[base + k]
            y = full[relations[k]]
            if gy is None or y is None or not y.requires_grad:
                continue
            more = torch.autograd.grad(y, targets, gy, retain_graph=True, allow_unused=True)
            for j, m in enumerate(more):
                if m is not None:
                    prev = grads[j]
                    grads[j] = m if prev is None else prev + m
        return grads

    def _group_signal(self, gi: int, g_new: list[Tensor], new: list[Tensor]) -> Tensor:
        return group_signal(self.groups[gi], self.intra.get(gi), g_new, new)

    def _signal(
        self,
        ell: Tensor,
        new: list[Tensor],
        ys: list[Tensor | None],
        full: list[Tensor | None],
        zs: list[Tensor | None],
        params: dict[str, nn.Parameter],
        Df: tuple[Tensor | None, ...],
        Dp: dict[tuple[str, int], Tensor],
    ) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
        """``δ_t`` per group and the exact same-step gradients."""
        group_leaves = [leaf for g in self.groups for leaf in g.leaves]
        exact_p = list(self.output_params) + [p.name for p in self.neuron_params if p.direct]
        y_idx = [
            i for i, r in enumerate(self.relations) if r.trained and (r.group is None or r.direct)
        ]
        sweep = list(self._sweep_rel)
        others = [i for i in y_idx if i not in sweep]
        targets = (
            [new[leaf] for leaf in group_leaves]
            + [params[n] for n in exact_p]
            + _all(ys, others)
            + _all(ys, sweep)
        )
        grads = self._sweep([ell], [torch.ones_like(ell)], targets, ys, full, sweep)
        g_new: list[Tensor] = [torch.zeros(0)] * len(new)
        for k, leaf in enumerate(group_leaves):
            gk = grads[k]
            g_new[leaf] = torch.zeros_like(new[leaf]) if gk is None else gk
        delta = tuple(self._group_signal(gi, g_new, new) for gi in range(len(self.groups)))
        exact: dict[str, Tensor] = {}
        off = len(group_leaves)
        for k, n in enumerate(exact_p):
            if grads[off + k] is not None:
                exact[n] = grads[off + k]  # type: ignore[assignment]
        off += len(exact_p)
        gy_of = {i: grads[off + k] for k, i in enumerate(others + sweep)}
        for i in y_idx:
            r, gy = self.relations[i], gy_of[i]
            if gy is None:
                continue
            if r.group is not None:  # direct part: minus what goes through the group's state
                gy = gy - (delta[r.group] * Df[i]).sum(-1)  # type: ignore[operator]
            grads_r = relation_grads(r, zs[i], gy)  # type: ignore[arg-type]
            _add(exact, {k: v for k, v in grads_r.items() if k in self.trained})
        for p in self.neuron_params:
            if p.direct and p.name in exact:
                through = sum(
                    _reduce_to(delta[gi] * Dp[(p.name, gi)], params[p.name]) for gi in p.groups
                )
                exact[p.name] = exact[p.name] - through
        return delta, exact

    def _signal_prev(
        self,
        ell: Tensor,
        new: list[Tensor],
        h_prev: list[Tensor],
        ys: list[Tensor | None],
        full: list[Tensor | None],
        delta: tuple[Tensor, ...],
    ) -> tuple[Tensor, ...]:
        """``δ^prev`` per group: ``d/dh^G_{t-1} [ℓ_t - Σ_{a∈G} <δ_a, h^a_t>]`` (uncut step)."""
        rels = [i for i in self._step_rel if full[i] is not None and full[i].requires_grad]  # type: ignore[union-attr]
        out = []
        for gi, g in enumerate(self.groups):
            roots = [ell] + [new[leaf] for leaf in g.leaves if new[leaf].requires_grad]
            cots = [torch.ones_like(ell)] + [
                -delta[gi][..., a] for a, leaf in enumerate(g.leaves) if new[leaf].requires_grad
            ]
            targets = [h_prev[leaf] for leaf in g.leaves] + _all(ys, rels)
            grads = self._sweep(roots, cots, targets, ys, full, rels)
            cols = [
                torch.zeros_like(h_prev[leaf]) if grads[a] is None else grads[a]
                for a, leaf in enumerate(g.leaves)
            ]
            out.append(torch.stack(cols, -1))  # type: ignore[arg-type]
        return tuple(out)


def group_signal(
    g: HiddenGroup,
    deps: dict[int, tuple[int, ...]] | None,
    g_new: Sequence[Tensor],
    new: Sequence[Tensor],
) -> Tensor:
    """The partial learning signal ``δ = (I + T_offᵀ)^{-1} g`` of one group, ``(B, H, S)``.

    Args:
        g: the group.
        deps: ``{c: (a, ...)}``: ``h^c_t`` depends on ``h^a_t`` within the step (None: none).
        g_new: total derivatives of the loss w.r.t. the new state tensors (by leaf index).
        new: the new state tensors of the step's graph (``T[c, a]`` is read from them).
    """
    gs = torch.stack([g_new[leaf] for leaf in g.leaves], -1)  # (B, H, S)
    if not deps:
        return gs
    M = torch.eye(g.S, dtype=gs.dtype, device=gs.device).expand(*gs.shape, g.S).clone()
    for c, a_s in deps.items():
        hc = new[g.leaves[c]]
        Ts = torch.autograd.grad(
            hc, [new[g.leaves[a]] for a in a_s], torch.ones_like(hc), retain_graph=True,
            allow_unused=True,
        )  # fmt: skip
        for a, T in zip(a_s, Ts):
            if T is not None:
                M[..., a, c] = T  # (I + T_offᵀ)[a, c] = T[c, a], per neuron
    return torch.linalg.solve(M, gs.unsqueeze(-1)).squeeze(-1)


def _some(xs: Sequence[Tensor | None], i: int) -> Tensor:
    x = xs[i]
    assert x is not None, "relation output missing: the step's calls changed"
    return x


def _all(xs: Sequence[Tensor | None], idx: Sequence[int]) -> list[Tensor]:
    return [_some(xs, i) for i in idx]


def _reduce_to(x: Tensor, p: Tensor) -> Tensor:
    """Sum a ``(B, H, S)`` tensor down to the shape of parameter ``p`` (scalar or (H,))."""
    if p.numel() == 1:
        return x.sum().reshape(p.shape)
    return x.sum((0, 2)).reshape(p.shape)


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
