"""Public test helpers: oracles against BPTT, gradient quality, cell purity.

* :func:`gradient_alignment` - cosine and relative error of a rule's gradient vs BPTT, per
  parameter: the number every comparison in chronograd reports.
* :func:`assert_matches_bptt` - the oracle of an exact rule.
* :func:`gradcheck_cell` - finite-difference check of a smooth cell (float64).
* :func:`assert_pure_step` - a step neither mutates its inputs nor the module.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from chronograd._tree import tree_leaves, tree_unflatten
from chronograd.cells.base import State, check_cell
from chronograd.objectives import Objective
from chronograd.rules.base import LearningRule
from chronograd.rules.bptt import BPTT
from chronograd.rules.driver import gradient


class Alignment(NamedTuple):
    """Agreement of a gradient ``g`` with a reference ``r``.

    ``cosine = <g, r> / (|g| |r|)`` (1 when both are zero, 0 when exactly one is);
    ``rel_error = |g - r| / |r|`` (0 when both are zero, inf when only ``r`` is).
    """

    cosine: float
    rel_error: float


def alignment(g: Tensor, r: Tensor) -> Alignment:
    """:class:`Alignment` of two tensors of the same shape (computed in float64)."""
    g, r = g.detach().double().flatten(), r.detach().double().flatten()
    ng, nr = float(g.norm()), float(r.norm())
    diff = float((g - r).norm())
    if nr == 0.0:
        return Alignment(1.0 if ng == 0.0 else 0.0, 0.0 if ng == 0.0 else math.inf)
    if ng == 0.0:
        return Alignment(0.0, 1.0)
    return Alignment(float(g @ r) / (ng * nr), diff / nr)


def gradient_alignment(
    rule: LearningRule,
    model: nn.Module,
    xs: Tensor,
    targets: Any,
    objective: Objective,
    *,
    state: State | None = None,
    reference: dict[str, Tensor] | None = None,
) -> dict[str, Alignment]:
    """Per-parameter alignment of ``rule``'s gradient with BPTT's on one batch of sequences.

    Args:
        reference: a precomputed reference gradient (default: BPTT on the same parameters).

    Returns:
        ``{param_name: Alignment}`` plus ``"all"`` for the concatenation of every parameter.
    """
    g = gradient(rule, model, xs, targets, objective, state=state)
    if reference is None:
        reference = gradient(BPTT(params=rule.params), model, xs, targets, objective, state=state)
    out = {n: alignment(g[n], reference[n]) for n in g}
    out["all"] = alignment(
        torch.cat([g[n].flatten() for n in g]), torch.cat([reference[n].flatten() for n in g])
    )
    return out


def assert_matches_bptt(
    rule: LearningRule,
    model: nn.Module,
    xs: Tensor,
    targets: Any,
    objective: Objective,
    *,
    state: State | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-12,
    params: list[str] | None = None,
) -> None:
    """Assert ``rule``'s gradient equals BPTT's (``|g - r| <= atol + rtol |r|`` element-wise).

    Use float64 models and inputs. ``params`` restricts the comparison to some parameters.
    """
    g = gradient(rule, model, xs, targets, objective, state=state)
    r = gradient(BPTT(params=rule.params), model, xs, targets, objective, state=state)
    names = params if params is not None else list(r)
    if not names:
        raise AssertionError("no parameters to compare")
    for n in names:
        if n not in g:
            raise AssertionError(f"{type(rule).__name__} produced no gradient for {n!r}")
        if not torch.allclose(g[n], r[n], rtol=rtol, atol=atol):
            err = float((g[n] - r[n]).abs().max())
            ref = float(r[n].abs().max())
            raise AssertionError(
                f"{type(rule).__name__} gradient of {n!r} differs from BPTT: max |diff| = "
                f"{err:.3e} (max |bptt| = {ref:.3e}, rtol={rtol}, atol={atol})"
            )


def gradcheck_cell(cell: nn.Module, x: Tensor, state: State, **kwargs: Any) -> bool:
    """``torch.autograd.gradcheck`` of one step w.r.t. input, state and parameters (float64).

    Only for smooth cells (spiking cells have surrogate derivatives, which finite differences
    do not see).
    """
    check_cell(cell)
    params = [p for p in cell.parameters() if p.requires_grad]
    leaves = tree_leaves(state)
    names = [n for n, p in cell.named_parameters() if p.requires_grad]

    def step(x: Tensor, *flat: Tensor) -> tuple[Tensor, ...]:
        st = tree_unflatten(state, flat[: len(leaves)])
        ps = dict(zip(names, flat[len(leaves) :]))
        y, new = torch.func.functional_call(cell, ps, (x, st))
        return (*tree_leaves(y), *tree_leaves(new))

    inputs = (x.detach().double().requires_grad_(), *(t.detach().double().requires_grad_() for t in leaves),
              *(p.detach().double().requires_grad_() for p in params))  # fmt: skip
    return bool(torch.autograd.gradcheck(step, inputs, **kwargs))


def assert_pure_step(cell: nn.Module, x: Tensor, state: State) -> None:
    """Assert one step is a pure function: same result twice, inputs and module untouched."""
    check_cell(cell)
    x0 = x.clone()
    s0 = [t.clone() for t in tree_leaves(state)]
    module0 = {k: v.clone() for k, v in cell.state_dict().items()}
    attrs0 = set(vars(cell))
    with torch.no_grad():
        y1, n1 = cell(x, state)
        y2, n2 = cell(x, state)
    for a, b in zip(tree_leaves((y1, n1)), tree_leaves((y2, n2))):
        if not torch.equal(a, b):
            raise AssertionError("two calls with the same input and state gave different results")
    if not torch.equal(x, x0):
        raise AssertionError("the step modified its input tensor")
    for a, b in zip(tree_leaves(state), s0):
        if not torch.equal(a, b):
            raise AssertionError(
                "the step modified the state it was given (state must be replaced, not mutated)"
            )
    after = cell.state_dict()
    for k, v in module0.items():
        if not torch.equal(after[k], v):
            raise AssertionError(
                f"the step modified the module's {k!r} (modules hold parameters, never state)"
            )
    if set(vars(cell)) != attrs0:
        raise AssertionError(
            f"the step added attributes to the module: {sorted(set(vars(cell)) - attrs0)}"
        )


__all__ = [
    "Alignment",
    "alignment",
    "assert_matches_bptt",
    "assert_pure_step",
    "gradcheck_cell",
    "gradient_alignment",
]
