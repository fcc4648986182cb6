"""Applying what a rule hands on: the one place where weights change.

The driver (:func:`chronograd.rules.drive`) yields :class:`~chronograd.rules.Update` values and
never touches the model. :func:`apply_to_model` builds the function that takes one of them to
the model: the data-parallel average across ranks, the optimizer step for gradients, the
direct additive updates, then the constraints. :func:`run_sequence` drives one batch and
applies every update as it comes (before the rule's next chunk runs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from chronograd.cells.base import State
from chronograd.objectives import Objective
from chronograd.rules.base import Carry, Grads, LearningRule, Reduce, RuleStep
from chronograd.rules.driver import SequenceResult, Update, drive, run
from chronograd.sequence import Span
from chronograd.training.distributed import DistributedContext, average
from chronograd.transforms import GradientTransform

Apply = Callable[[Update], None]


def apply_to_model(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    constraints: Sequence[Callable[[], object]] = (),
    *,
    rule: LearningRule | None = None,
    distributed: DistributedContext | None = None,
) -> Apply:
    """The function that applies one :class:`~chronograd.rules.Update` to ``model``.

    Gradients are written to ``.grad`` and ``optimizer`` steps; direct updates are added
    (``p += u``); ``constraints`` (e.g. :class:`chronograd.constraints.DaleProjection`) are
    called in order afterwards, so they hold after every update. With ``distributed``, the
    gradient is first averaged across ranks weighted by each rank's batch size, and direct
    updates are refused unless ``rule.reducible_updates``.
    """
    params = dict(model.named_parameters())
    constraints = tuple(constraints)
    for c in constraints:
        if not callable(c):
            raise TypeError(f"a constraint must be callable () -> None, got {type(c).__name__}")

    def apply(update: Update) -> None:
        grads, updates = update.grads, update.updates
        if distributed is not None:
            if updates and not (rule is not None and rule.reducible_updates):
                name = type(rule).__name__ if rule is not None else "this rule"
                raise ValueError(
                    f"{name} updates weights directly, and averaging those updates across "
                    "ranks is not the full-batch update; train it in a single process "
                    "(distributed=False)"
                )
            grads = average(grads, float(update.batch_size))
        if grads:
            if optimizer is None:
                raise ValueError(
                    "this rule produces gradients, so it needs an optimizer (e.g. "
                    "torch.optim.Adam(model.parameters(), lr=1e-3))"
                )
            optimizer.zero_grad(set_to_none=True)
            for name, g in grads.items():
                params[name].grad = g.detach().to(params[name].dtype)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if updates:
            with torch.no_grad():
                for name, u in updates.items():
                    params[name].add_(u.to(params[name].dtype))
        for c in constraints:
            c()

    return apply


def reduce_for(distributed: DistributedContext | None) -> Reduce:
    """The driver's ``reduce``: an average across ranks when distributed, else the identity."""

    def reduce(grads: Grads, batch_size: int) -> Grads:
        return dict(grads) if distributed is None else average(grads, float(batch_size))

    return reduce


def run_sequence(
    rule: LearningRule,
    model: nn.Module,
    xs: Tensor,
    targets: Any,
    objective: Objective,
    *,
    apply: Apply | None = None,
    state: State | None = None,
    carry: Carry | None = None,
    accumulate: bool = False,
    transform: GradientTransform | None = None,
    distributed: DistributedContext | None = None,
    on_chunk_start: Callable[[Span], None] | None = None,
    on_chunk_end: Callable[[Span, RuleStep], None] | None = None,
) -> SequenceResult:
    """Drive ``rule`` over one batch ``xs`` (``(T, B, I)``) and ``apply`` each update.

    ``apply`` is typically :func:`apply_to_model`; ``None`` applies nothing (then the result's
    ``grads`` is :func:`~chronograd.rules.gradient`). The other arguments are
    :func:`~chronograd.rules.drive`'s.
    """
    updates = drive(
        rule, model, xs, targets, objective, state=state, carry=carry, accumulate=accumulate,
        transform=transform, reduce=reduce_for(distributed), on_chunk_start=on_chunk_start,
        on_chunk_end=on_chunk_end,
    )  # fmt: skip
    return run(updates, apply)


__all__ = ["Apply", "apply_to_model", "reduce_for", "run_sequence"]
