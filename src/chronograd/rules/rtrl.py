"""Exact real-time recurrent learning (Williams & Zipser 1989): the universal online oracle.

With the step ``(o_t, h_t) = f(h_{t-1}, x_t; θ)``, the influence matrix ``M_t = dh_t/dθ``
(per sample, ``(B, N, |θ|)`` with ``N`` the state size) follows::

    M_t = J_t M_{t-1} + ∂f/∂θ|_t          J_t = ∂f/∂h_{t-1} (the full Jacobian)
    dℓ_t/dθ = (∂ℓ_t/∂o_t) (∂o_t/∂h_{t-1} M_{t-1} + ∂o_t/∂θ)

Both are one forward-mode pass: the JVP of the step in direction ``(M_{t-1} e_k, e_k)`` gives
``M_t e_k`` on the state and ``do_t/dθ_k`` on the output, for every parameter coordinate ``k``
at once (``vmap`` over ``k``, in slices of ``directions`` coordinates). ``M_0 = 0``: the
initial state is a constant. The influence is carried across the chunks of a sequence, so any
``chunk_size`` gives the same (exact) gradient, only split into updates. Memory
``O(B·N·|θ|)``, time ``O(|θ|)`` steps per step: for small networks, and as the oracle every
other rule is measured against. (snnTorch's "RTRL" is TBPTT with one-step truncation, which
drops ``J_t M_{t-1}``; it is not this.)

Williams & Zipser (1989), "A learning algorithm for continually running fully recurrent neural
networks", Neural Computation 1(2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap

from chronograd._tree import detach, tree_leaves, tree_map, tree_stack, tree_unflatten
from chronograd.cells.base import State
from chronograd.objectives import Objective
from chronograd.rules.base import (
    Carry,
    Chunk,
    LearningRule,
    RuleStep,
    check_chunk_size,
    penalty_grads,
)
from chronograd.traces.chunk import check_trace_dtype, time_slice, trace_dtype_of


@final
@dataclass(frozen=True)
class RTRL(LearningRule):
    """Exact RTRL with a per-sample influence matrix (see the module docstring).

    Args:
        chunk_size: steps per update (``None``: one update per sequence).
        directions: parameter coordinates per ``vmap`` slice (bounds the working memory).
        trace_dtype: dtype the influence matrices are kept in between steps (default: the
            state's; the JVPs run in the state's dtype).
        (plus the options shared by every rule, see :class:`LearningRule`)
    """

    chunk_size: int | None = None
    directions: int = 512
    trace_dtype: torch.dtype | str | None = None

    def _check(self) -> None:
        check_chunk_size(self.chunk_size)
        object.__setattr__(self, "trace_dtype", check_trace_dtype(self.trace_dtype))
        if not isinstance(self.directions, int) or self.directions < 1:
            raise ValueError(f"directions must be a positive int, got {self.directions!r}")

    def init(self, model: nn.Module, state: State) -> Carry:
        return None  # the influence matrices, created at the first chunk

    def _dtype(self, like: Tensor) -> torch.dtype:
        return trace_dtype_of(self) or like.dtype

    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        params = self.trained(model)
        names = list(params)
        sizes = [params[n].numel() for n in names]
        P = sum(sizes)
        leaves = [leaf.detach() for leaf in tree_leaves(state)]
        M: list[Tensor] = (
            carry
            if carry is not None
            else [leaf.new_zeros(*leaf.shape, P, dtype=self._dtype(leaf)) for leaf in leaves]
        )  # (B, ..., P) per state tensor
        T, B = xs.shape[0], xs.shape[1]
        dtype = leaves[0].dtype if leaves else xs.dtype
        w = objective.weights(
            span.total, B, start=span.start, stop=span.stop, device=xs.device, dtype=dtype
        )
        p0 = {n: params[n].detach() for n in names}
        eye = torch.eye(P, device=xs.device, dtype=p0[names[0]].dtype) if P else None
        grad = torch.zeros(P, device=xs.device, dtype=dtype)
        template = _out_template(model, xs[0], state)
        outs, total = [], torch.zeros((), device=xs.device, dtype=dtype)
        for t in range(T):

            def f(
                h: tuple[Tensor, ...], p: dict[str, Tensor], t: int = t, s: State = state
            ) -> tuple[Any, Any]:
                out, new = functional_call(model, p, (xs[t], tree_unflatten(s, list(h))))
                return tuple(tree_leaves(out)), tuple(tree_leaves(new))

            def direction(
                tan_h: tuple[Tensor, ...],
                tan_p: dict[str, Tensor],
                h0: Any = tuple(leaves),
                f: Any = f,
            ) -> Any:
                return jvp(f, (h0, p0), (tan_h, tan_p))

            out_t, new_t, dout, dnew = [], [], [], []
            for start in range(0, P, self.directions):
                stop = min(P, start + self.directions)
                cols = eye[start:stop] if eye is not None else None  # (k, P)
                assert cols is not None
                tan_p = {
                    n: c.reshape(-1, *params[n].shape)
                    for n, c in zip(names, cols.split(sizes, dim=1))
                }
                tan_h = tuple(  # (k, B, ...), in the state's dtype
                    m[..., start:stop].movedim(-1, 0).to(leaf.dtype) for m, leaf in zip(M, leaves)
                )
                (o, n_), (do, dn) = vmap(direction)(tan_h, tan_p)
                out_t, new_t = [x[0] for x in o], [x[0] for x in n_]
                dout.append(do)
                dnew.append(dn)
            o_leaves = [x.detach().requires_grad_(True) for x in out_t]
            out = tree_unflatten(template, o_leaves)
            per = objective.per_sample(
                tree_map(lambda v: v.unsqueeze(0), out),
                time_slice(targets, t, t + 1),
            )
            ell = (w[t] * per[0]).sum()
            if ell.requires_grad and P:
                gouts = torch.autograd.grad(ell, o_leaves, allow_unused=True)
                for k, douts in enumerate(dout):
                    for g, d in zip(gouts, douts):
                        if g is not None:
                            first = k * self.directions
                            grad[first : first + d.shape[0]] += (d * g).flatten(1).sum(1)
            M = [
                torch.cat([d[j] for d in dnew], 0).movedim(0, -1).to(self._dtype(leaves[j]))
                for j in range(len(leaves))
            ]
            leaves = [x.detach() for x in new_t]
            state = tree_unflatten(state, leaves)
            outs.append(detach(out))
            total = total + ell.detach()
        grads = dict(
            zip(names, (g.reshape(params[n].shape) for n, g in zip(names, grad.split(sizes))))
        )
        pen = penalty_grads(objective, dict(params))
        for name, v in (pen or {}).items():
            grads[name] = grads[name] + v
        return RuleStep(grads, state, M, total, tree_stack(outs))


def _out_template(model: nn.Module, x: Tensor, state: State) -> Any:
    """The structure of the model's output (a tensor or a tree of them)."""
    with torch.no_grad():
        out, _ = model(x, state)
    return out
