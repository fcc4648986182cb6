"""The probe of :func:`~chronograd.traces.compile_graph`: one step of a float64 copy, with JVPs.

:class:`Probe` copies the model to float64, draws a random state (the given one plus seeded
standard normal noise, so surrogate derivatives are non-zero for many neurons), records the relation
calls of one step and offers the step as a function of the state, the relation outputs (cut,
i.e. injected, or computed) and selected parameters, for ``torch.func.jvp``. The hoisted input
map is used when every output leaf of ``input_map`` is a relation output of the raw input.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from chronograd._tree import tree_leaves, tree_unflatten
from chronograd.cells.base import HoistedCell
from chronograd.traces.groups import HiddenGroup
from chronograd.traces.intercept import LinearCall, intercept_linears
from chronograd.traces.structure import StepOf


def nonzero(t: Tensor | None, scale: float = 1.0) -> bool:
    """Whether ``t`` exists and is not zero relative to ``scale``."""
    return t is not None and bool(t.abs().max() > 1e-10 * max(1.0, scale))


def close(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` and ``b`` agree to about 1e-8 relative (probing runs in float64)."""
    a, b = a.detach(), b.detach()
    scale = float(torch.maximum(a.abs().max(), b.abs().max()))
    return bool((a - b).abs().max() <= 1e-8 * max(scale, 1e-30) + 1e-12)


class Probe:
    """A float64 copy of the model, run once at a random state, with JVP helpers."""

    def __init__(self, model: nn.Module, x: Tensor, state: Any, trained: Sequence[str]) -> None:
        self.model = copy.deepcopy(model).to(torch.float64)
        self.params = dict(self.model.named_parameters())
        self.state = state
        gen = torch.Generator().manual_seed(20240601)
        self.h0 = [
            (leaf.detach().double() + torch.randn(leaf.shape, generator=gen).to(leaf.device))
            for leaf in tree_leaves(state)
        ]
        self.x = x.detach().to(torch.float64)
        self.hoisted, self.u, self.in_calls, ys_in, self.leaf_of = self._hoist()
        outs: list[Tensor] = []

        def record(call: LinearCall, default: Any) -> Tensor:
            y = default()
            outs.append(y)
            return y

        with torch.no_grad(), intercept_linears(self.params, record) as rec:
            self.step_fn()(self.u, tree_unflatten(state, self.h0))
        self.step_calls = rec.calls
        self.calls = list(self.in_calls) + list(self.step_calls)
        self.y0 = [y.detach() for y in ys_in] + [y.detach() for y in outs]
        self.n_in = len(self.in_calls)
        self.trained = set(trained)

    def step_fn(self) -> Any:
        """The function of one step probed: the hoisted step, or the model itself."""
        return self.model.step if self.hoisted else self.model

    def _hoist(self) -> tuple[bool, Any, list[LinearCall], list[Tensor], dict[int, int]]:
        """Whether the input map can run for a whole chunk, with the step input it gives."""
        if not isinstance(self.model, HoistedCell):
            return False, self.x, [], [], {}
        outs: list[Tensor] = []

        def record(call: LinearCall, default: Any) -> Tensor:
            y = default()
            outs.append(y)
            return y

        with torch.enable_grad(), intercept_linears(self.params, record) as rec:
            u = self.model.input_map(self.x.unsqueeze(0))
        leaves = tree_leaves(u)
        leaf_of: dict[int, int] = {}
        for k, y in enumerate(outs):
            hits = [j for j, leaf in enumerate(leaves) if leaf is y]
            if len(hits) != 1 or rec.calls[k].input.requires_grad:
                return False, self.x, [], [], {}
            leaf_of[k] = hits[0]
        rel_leaves = set(leaf_of.values())
        if any(leaf.requires_grad for j, leaf in enumerate(leaves) if j not in rel_leaves):
            return False, self.x, [], [], {}
        step_u = tree_unflatten(u, [leaf.detach()[0] for leaf in leaves])
        ys = [outs[k].detach()[0] for k in range(len(outs))]
        calls = [c._replace(input=c.input[0]) for c in rec.calls]
        return True, step_u, calls, ys, leaf_of

    def run(
        self, h: Sequence[Tensor], ys: Sequence[Tensor], pvals: dict[str, Tensor], cut: set[int]
    ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...], tuple[Tensor, ...]]:
        """The step with relation outputs ``ys[i]`` injected for ``i in cut``.

        Returns ``(new state leaves, output leaves, step relation inputs)``.
        """
        zs: list[Tensor] = []
        pos = iter(range(self.n_in, len(self.calls)))

        def handler(call: LinearCall, default: Any) -> Tensor:
            i = next(pos)
            zs.append(call.input)
            return ys[i] if i in cut else default()

        u = self.u
        if self.hoisted:
            leaves = list(tree_leaves(u))
            for k in range(self.n_in):
                leaves[self.leaf_of[k]] = ys[k]
            u = tree_unflatten(u, leaves)
        module = StepOf(self.model) if self.hoisted else self.model
        prefix = "cell." if self.hoisted else ""
        with intercept_linears(self.params, handler):
            out, new = functional_call(
                module,
                {prefix + n: v for n, v in pvals.items()},
                (u, tree_unflatten(self.state, list(h))),
            )
        return tuple(tree_leaves(new)), tuple(tree_leaves(out)), tuple(zs)

    def jvp(
        self,
        th: dict[int, Tensor] | None = None,
        ty: dict[int, Tensor] | None = None,
        tp: dict[str, Tensor] | None = None,
        cut: set[int] | None = None,
        pnames: Sequence[str] = (),
    ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...], tuple[Tensor, ...]]:
        """Tangents of (new state, outputs, relation inputs) for the given input tangents."""
        cut = set(range(len(self.calls))) if cut is None else cut
        names = sorted(set(pnames) | set(tp or {}))
        p0 = {n: self.params[n].detach() for n in names}
        tan_h = tuple((th or {}).get(k, torch.zeros_like(h)) for k, h in enumerate(self.h0))
        tan_y = tuple((ty or {}).get(k, torch.zeros_like(y)) for k, y in enumerate(self.y0))
        tan_p = {n: (tp or {}).get(n, torch.zeros_like(v)) for n, v in p0.items()}
        out = jvp(
            lambda h, y, p: self.run(h, y, p, cut),
            (tuple(self.h0), tuple(self.y0), p0),
            (tan_h, tan_y, tan_p),
        )
        return out[1]


def group_hits(groups: Sequence[HiddenGroup], tangents: Sequence[Tensor]) -> list[int]:
    """Indices of the hidden groups that a tangent in ``tangents`` reaches."""
    return [gi for gi, g in enumerate(groups) if any(nonzero(tangents[k]) for k in g.leaves)]


def stack_group(g: HiddenGroup, tangents: Sequence[Tensor]) -> Tensor:
    """The tangents of group ``g``'s state variables stacked as ``(B, H, S)``."""
    return torch.stack([tangents[k] for k in g.leaves], -1)  # (B, H, S)
