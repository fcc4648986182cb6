"""SnAp-n: RTRL with the influence matrix kept on the sparsity pattern reached in ``n`` steps.

Menick et al. (2021). With the step ``h_t = f(h_{t-1}, x_t; θ)`` (``N`` state variables per
sample, all state tensors flattened), RTRL's influence ``M_t = J_t M_{t-1} + I_t`` (``J_t =
∂f/∂h_{t-1}``, ``I_t = ∂f/∂θ``) is kept only on the pattern::

    P_1 = pattern(I)          P_{k+1} = P_k ∪ pattern(J P_k)          (structural, from probes)
    M_t = mask_{P_n} ⊙ (J_t M_{t-1} + I_t)
    dℓ_t/dθ = ∂ℓ_t/∂θ|_{h_{t-1}} + ∂ℓ_t/∂h_{t-1} M_{t-1}

SnAp-1 keeps, for a weight into unit ``h``, only the entries of the units its step writes
directly (``h``, plus same-step readers such as a readout): the diagonal of ``J`` carries the
unit's own memory, recurrent weights included (``(1 - h²) W_hh`` in a tanh RNN), where D-RTRL
cuts the recurrent matmul. The mask applies to the influence carried from step to step; the
loss of step ``t`` sees that step exactly (``∂ℓ_t/∂h_{t-1}`` through the full ``J_t``, as
RTRL's oracle does), so SnAp-1 is D-RTRL's braintrace multi-step with one-step windows
(``DRTRL(mode="multi-step", window=1)``) wherever their traces coincide (a zero diagonal of
``W_hh``), and exact, as D-RTRL is, without recurrent weights. Once ``P_n`` stops growing
(two steps for a dense RNN) SnAp-n is exact RTRL.

The pattern is found once per model from random probes (16 states at four scales) of one sample's Jacobians
(parameters perturbed, so a zero parameter value is not taken for a structural zero) and
grouped by row set: columns with the same rows ``R`` form a dense block ``(B, |R|, q)``, and
blocks of one shape are stacked, so the update is one batched matmul with ``J[R, R]`` per
block shape. Memory kept between steps:
``O(B·nnz(P_n))`` (SnAp-1 on a dense ``H``-unit RNN: ``O(B·|θ|)`` against RTRL's
``O(B·H·|θ|)``); per step the Jacobians of the step are formed per sample by reverse mode
(``N`` VJPs, a transient ``O(B·N·(N + |θ|))``) and the blocks cost ``O(B·Σ_R |R|²·q)``.
``benchmarks/snap_cost.py`` measures both against RTRL and D-RTRL.

Menick, Elsen, Evci, Osindero, Simonyan, Graves (2021), "Practical real time recurrent
learning with a sparse approximation", ICLR.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, final

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from chronograd._tree import detach, tree_leaves, tree_stack, tree_unflatten
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
from chronograd.traces.chunk import step_loss

Block = tuple[Tensor, Tensor]
"""``(rows (G, m), cols (G, q))``: ``G`` blocks of the pattern of the same shape, stacked."""
_PATTERNS: weakref.WeakKeyDictionary[nn.Module, dict[Any, list[Block]]] = (
    weakref.WeakKeyDictionary()
)


class StepJacobians:
    """Per-sample ``J = ∂h_t/∂h_{t-1}`` ``(B, N, N)`` and ``I = ∂h_t/∂θ`` ``(B, N, P)`` of a model."""

    def __init__(self, model: nn.Module, state: State, names: list[str]) -> None:
        self.model, self.state, self.names = model, state, names
        leaves = tree_leaves(state)
        self.shapes = [tuple(leaf.shape[1:]) for leaf in leaves]
        self.sizes = [int(torch.Size(s).numel()) for s in self.shapes]

    def flat(self, leaves: list[Tensor]) -> Tensor:
        """``(B, N)`` from the state leaves."""
        return torch.cat([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], 1)

    def _one(self, h: Tensor, p: dict[str, Tensor], x: Tensor) -> Tensor:
        parts = [v.reshape(1, *s) for v, s in zip(h.split(self.sizes), self.shapes)]
        _, new = functional_call(self.model, p, (x.unsqueeze(0), tree_unflatten(self.state, parts)))
        return torch.cat([v.reshape(-1) for v in tree_leaves(new)])

    def __call__(self, h: Tensor, p: dict[str, Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
        J, I = vmap(jacrev(self._one, argnums=(0, 1)), in_dims=(0, None, 0))(h, p, x)
        B, N = h.shape
        return J, torch.cat([I[n].reshape(B, N, -1) for n in self.names], 2)


def sparsity_pattern(
    model: nn.Module, x: Tensor, state: State, names: list[str], n: int
) -> list[Block]:
    """The blocks of ``P_n`` (see the module docstring), cached per model and signature."""
    params = dict(model.named_parameters())
    key = (
        n, tuple(names), tuple(x.shape[1:]), x.dtype,
        tuple((tuple(v.shape[1:]), v.dtype) for v in tree_leaves(state)),
        tuple((k, tuple(v.shape)) for k, v in params.items()),
    )  # fmt: skip
    cache = _PATTERNS.setdefault(model, {})
    if key in cache:
        return cache[key]
    jac = StepJacobians(model, state, names)
    gen = torch.Generator().manual_seed(0)
    Jpat: Tensor | None = None
    Ipat: Tensor | None = None
    for scale in (0.1, 0.3, 1.0, 3.0):  # states at several scales: surrogates have a support
        probe = {
            k: v.detach() + 0.1 * torch.randn(v.shape, generator=gen).to(v)
            for k, v in params.items()
        }
        N = sum(jac.sizes)
        h = scale * torch.randn(4, N, generator=gen).to(x)
        xp = scale * torch.randn(4, *x.shape[1:], generator=gen).to(x)
        with torch.no_grad():
            J, I = jac(h, probe, xp)
        j, i = (J != 0).any(0), (I != 0).any(0)
        Jpat = j if Jpat is None else Jpat | j
        Ipat = i if Ipat is None else Ipat | i
    assert Jpat is not None and Ipat is not None
    mask = Ipat
    for _ in range(n - 1):
        grown = mask | ((Jpat.to(torch.float32) @ mask.to(torch.float32)) > 0)
        if bool((grown == mask).all()):
            break
        mask = grown
    groups: dict[tuple[int, ...], list[int]] = {}
    for c, rows in enumerate(mask.t().tolist()):
        key_r = tuple(r for r, on in enumerate(rows) if on)
        if key_r:
            groups.setdefault(key_r, []).append(c)
    shapes: dict[tuple[int, int], list[tuple[tuple[int, ...], list[int]]]] = {}
    for rows_, cols_ in groups.items():  # blocks of one shape: one batched matmul per step
        shapes.setdefault((len(rows_), len(cols_)), []).append((rows_, cols_))
    blocks = [
        (
            torch.tensor([r for r, _ in same], device=x.device),
            torch.tensor([c for _, c in same], device=x.device),
        )
        for same in shapes.values()
    ]
    cache[key] = blocks
    return blocks


def pattern_size(blocks: list[Block]) -> int:
    """``nnz(P_n)``: the influence entries kept per sample."""
    return sum(int(r.shape[0] * r.shape[1] * c.shape[1]) for r, c in blocks)


@final
@dataclass(frozen=True)
class SnAp(LearningRule):
    """SnAp-n: sparse RTRL on the pattern reached in ``n`` steps (see the module docstring).

    Args:
        n: steps of sparsity growth (``1``: SnAp-1; large: exact RTRL).
        chunk_size: steps per update (``None``: one update per sequence).
        (plus the options shared by every rule, see :class:`LearningRule`)
    """

    n: int = 1
    chunk_size: int | None = None

    def _check(self) -> None:
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1:
            raise ValueError(f"n must be a positive int (steps of sparsity growth), got {self.n!r}")
        check_chunk_size(self.chunk_size)

    def init(self, model: nn.Module, state: State) -> Carry:
        return None  # the blocks' values, created at the first chunk

    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        params = self.trained(model)
        names = list(params)
        sizes = [params[k].numel() for k in names]
        T, B = xs.shape[0], xs.shape[1]
        leaves = [leaf.detach() for leaf in tree_leaves(state)]
        dtype = leaves[0].dtype if leaves else xs.dtype
        w = objective.weights(
            span.total, B, start=span.start, stop=span.stop, device=xs.device, dtype=dtype
        )
        blocks = sparsity_pattern(model, xs[0], state, names, self.n)
        jac = StepJacobians(model, state, names)
        vals: list[Tensor] = (
            carry
            if carry is not None
            else [xs.new_zeros(B, *r.shape, c.shape[1], dtype=dtype) for r, c in blocks]
        )
        p0 = {k: params[k].detach() for k in names}
        grad = torch.zeros(sum(sizes), device=xs.device, dtype=dtype)
        direct = {k: torch.zeros_like(p0[k]) for k in names}
        outs, total = [], torch.zeros((), device=xs.device, dtype=dtype)
        for t in range(T):
            out, new_state, ell, h_req = step_loss(
                model, xs[t], state, leaves, targets, t, w[t], objective
            )
            if ell.requires_grad and bool(w[t].ne(0).any()):
                got = torch.autograd.grad(
                    ell, [params[k] for k in names] + h_req, allow_unused=True
                )
                for k, g in zip(names, got):
                    if g is not None:
                        direct[k] = direct[k] + g
                gh = jac.flat(
                    [
                        torch.zeros_like(h) if g is None else g
                        for h, g in zip(h_req, got[len(names) :])
                    ]
                )
                for (rows, cols), v in zip(blocks, vals):  # ∂ℓ_t/∂h_{t-1} M_{t-1}
                    g = torch.einsum("bgm,bgmq->gq", gh[:, rows], v)
                    grad.index_add_(0, cols.reshape(-1), g.reshape(-1))
            with torch.no_grad():
                J, I = jac(jac.flat(leaves), p0, xs[t])
                vals = [
                    J[:, rows[:, :, None], rows[:, None, :]] @ v
                    + I[:, rows[:, :, None], cols[:, None, :]]
                    for (rows, cols), v in zip(blocks, vals)
                ]
            leaves = [leaf.detach() for leaf in tree_leaves(new_state)]
            state = tree_unflatten(state, leaves)
            outs.append(detach(out))
            total = total + ell.detach()
        grads = {k: direct[k] + g.reshape(p0[k].shape) for k, g in zip(names, grad.split(sizes))}
        pen = penalty_grads(objective, dict(params))
        for k, v in (pen or {}).items():
            grads[k] = grads[k] + v
        return RuleStep(grads, state, vals, total, tree_stack(outs))
