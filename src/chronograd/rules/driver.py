"""The chunk driver shared by :func:`gradient` and the trainer: it never applies updates.

:func:`drive` splits one batch of sequences into chunks, asks the rule for each chunk's
gradient (``rule.update(model, Chunk(xs, targets, span), state, carry, objective)``), applies
the rule's non-finite policy and the gradient transform, and *yields* each update for its
caller to apply (:func:`chronograd.training.run_sequence` takes the optimizer step, applies
constraints and reduces across ranks). :func:`gradient` runs the same loop, applies nothing
and returns the summed gradient: the quantity every oracle compares.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from chronograd._tree import tree_cat, tree_leaves, tree_map
from chronograd.cells.base import State, check_cell, param_like
from chronograd.objectives import Objective
from chronograd.rules.base import (
    AfterUpdate,
    Carry,
    Chunk,
    Grads,
    LearningRule,
    PersistentCarry,
    Reduce,
    RuleStep,
    add_grads,
)
from chronograd.sequence import Span, check_sequence, spans
from chronograd.transforms import GradientTransform


@dataclass
class SequenceResult:
    """Outcome of one batch of sequences.

    Attributes:
        loss: mean of the chunk losses (Ignite's convention; the loss itself for one chunk).
        outputs: detached outputs ``(T, B, O)``.
        state: final model state (detached).
        carry: final carry.
        grads: sum of the chunk gradients (before clipping / EMA); the rule's gradient.
        updates: sum of direct updates (rules without an optimizer), or None.
        n_updates: how many times ``apply`` was called.
        nonfinite: how many updates had a non-finite gradient (skipped or replaced).
    """

    loss: float
    outputs: Any
    state: State
    carry: Carry
    grads: Grads
    updates: Grads | None
    n_updates: int
    nonfinite: int = 0


class NonFiniteError(FloatingPointError, ValueError):
    """An update's gradient held NaN or inf and the rule's policy is ``nonfinite="raise"``
    (also a ``ValueError``: a wrong value, which the command line reports in one line)."""


def _finite(grads: Grads | None) -> list[str]:
    """Names of the tensors of ``grads`` that hold a NaN or inf (one host sync in all)."""
    if not grads:
        return []
    names = list(grads)
    # a sum is finite iff every element is, barring overflow (the exact check tells it apart):
    # one pass per tensor and no tensor-sized temporary, on every update of online rules
    ok = torch.stack([torch.isfinite(grads[n].sum()) for n in names]).tolist()
    suspects = [n for n, good in zip(names, ok) if not good]
    return [n for n in suspects if not bool(torch.isfinite(grads[n]).all())]


def _sanitize(rule: LearningRule, step: RuleStep, span: Span) -> tuple[RuleStep, str]:
    """Apply the rule's non-finite policy to one chunk's result.

    Returns the (possibly repaired) step and ``"ok"``, ``"skip"`` (drop the update) or
    ``"replace"``.
    """
    bad = _finite(step.grads) + _finite(step.updates)
    if not bad:
        return step, "ok"
    policy = rule.nonfinite
    if policy.policy == "raise":
        raise NonFiniteError(
            f"{type(rule).__name__} produced a non-finite gradient for {sorted(set(bad))} in "
            f"steps [{span.start}, {span.stop}) of {span.total}; lower the learning rate, clip "
            "gradients (transform=clip_by_global_norm(...)), or set nonfinite='skip' or "
            "'replace' on the rule"
        )
    fix = policy.repair
    repaired = RuleStep(
        grads={k: fix(v) for k, v in step.grads.items()},
        state=tree_map(fix, step.state),
        carry=tree_map(fix, step.carry),
        loss=step.loss,
        outputs=step.outputs,
        updates=None if step.updates is None else {k: fix(v) for k, v in step.updates.items()},
    )
    return repaired, policy.policy


def _slice_time(tree: Any, span: Span) -> Any:
    return tree_map(lambda t: t[span.start : span.stop], tree)


def check_targets(xs: Tensor, targets: Any) -> None:
    """Targets must be time-first with the inputs' ``T`` and ``B``."""
    leaves = tree_leaves(targets)
    if not leaves:
        raise TypeError("targets must be a tensor (or a dict of tensors), time first")
    for t in leaves:
        if not isinstance(t, Tensor):
            raise TypeError(f"targets must be tensors, time first, got {type(t).__name__}")
        if t.is_complex():
            raise TypeError(
                f"targets must be real numbers, got dtype {t.dtype}; pass t.real or t.abs()"
            )
        if t.dim() < 2 or t.shape[0] != xs.shape[0] or t.shape[1] != xs.shape[1]:
            raise ValueError(
                f"targets must be time-first with the inputs' (T, B) = {tuple(xs.shape[:2])}, got "
                f"shape {tuple(t.shape)}; mismatched time lengths between inputs and targets, or "
                "a per-sequence label that needs repeating over time (y.expand(T, B))"
            )


def check_like_model(xs: Tensor, model: nn.Module) -> None:
    """Inputs must match the model's dtype and device and be finite."""
    device, dtype = param_like(model)
    if not xs.is_floating_point() and dtype.is_floating_point:
        raise TypeError(
            f"inputs must be floating point like the model's parameters ({dtype}), got "
            f"{xs.dtype}; convert them with xs.to({dtype})"
        )
    if xs.is_floating_point() and xs.dtype != dtype:
        raise ValueError(
            f"inputs are {xs.dtype} but the model's parameters are {dtype}; convert one of them "
            f"(xs.to({dtype}) or model.to({xs.dtype}))"
        )
    if xs.device != device and any(True for _ in model.parameters()):
        raise ValueError(
            f"inputs are on {xs.device} but the model is on {device}; move them "
            f"(xs.to('{device}')) or use the rule's prepare_batch / the trainer's device="
        )
    # a sum is finite iff every element is (barring overflow, which the exact check below
    # tells apart); torch.isfinite(xs) would allocate ~1.6x the input on every call
    if (
        xs.is_floating_point()
        and not bool(torch.isfinite(xs.sum()))
        and not bool(torch.isfinite(xs).all())
    ):
        bad = (~torch.isfinite(xs)).nonzero()[0].tolist()
        raise ValueError(
            f"inputs contain NaN or inf (first at index (t, b, ...) = {tuple(bad)}); clean or "
            "mask the data before training"
        )


def check_state(state: State, batch_size: int) -> None:
    """A state handed in must be a tree of ``(B, ...)`` tensors with the inputs' ``B``."""
    if not isinstance(state, (tuple, list, dict, Tensor)):
        raise TypeError(
            f"state must be the model's state (a NamedTuple of (B, ...) tensors, as "
            f"model.init_state(B) returns), got {type(state).__name__}"
        )
    bad = [tuple(t.shape) for t in tree_leaves(state) if t.dim() == 0 or t.shape[0] != batch_size]
    if bad:
        raise ValueError(
            f"state tensors must have the inputs' batch size B = {batch_size} first, got shapes "
            f"{bad}; build it with model.init_state({batch_size})"
        )


class Update(NamedTuple):
    """What the driver hands on for one update: it never applies it.

    Attributes:
        grads: the (transformed) gradient to apply, ``{name: tensor}`` (may be empty).
        updates: direct additive updates ``p += u`` (rules without an optimizer), or None.
        span: the steps it covers (the whole sequence when accumulated).
        batch_size: how many sequences it was computed on (for averaging across ranks).
    """

    grads: Grads
    updates: Grads | None
    span: Span
    batch_size: int


def _identity(grads: Grads, batch_size: int) -> Grads:
    return grads


def drive(
    rule: LearningRule,
    model: nn.Module,
    xs: Tensor,
    targets: Any,
    objective: Objective,
    *,
    state: State | None = None,
    carry: Carry | None = None,
    accumulate: bool = False,
    transform: GradientTransform | None = None,
    reduce: Reduce = _identity,
    on_chunk_start: Callable[[Span], None] | None = None,
    on_chunk_end: Callable[[Span, RuleStep], None] | None = None,
) -> Generator[Update, bool | None, SequenceResult]:
    """Run ``rule`` over one batch of time-first sequences ``xs`` (``(T, B, I)``).

    A generator: it yields one :class:`Update` per update (after every chunk, or once at the
    end with ``accumulate=True``) and returns the :class:`SequenceResult`. Whoever iterates it
    applies each update and then resumes it with ``send(True)`` (the rule's
    :meth:`~chronograd.rules.base.AfterUpdate.after_update` then sees the new weights), or with
    ``next()`` when it applied nothing; see :func:`run`. :func:`gradient` applies nothing.

    Args:
        rule, model, objective: what to train, on what, for what.
        targets: time-first targets (``(T, B, ...)`` or a dict of them).
        state: initial model state (default ``model.init_state(B)``).
        carry: the rule's carry from the previous sequence (default ``rule.init``); rules with
            a :class:`~chronograd.rules.base.PersistentCarry` keep its persistent parts.
        accumulate: sum the chunk gradients and hand on one update at the sequence's end.
        transform: a :class:`~chronograd.transforms.GradientTransform` (clipping, EMA) applied
            to each handed-on gradient, its state fresh at every sequence.
        reduce: turns a gradient the rule computes after an update (FPTT's two-pass form) into
            the full batch's (an average across ranks when data-parallel).
        on_chunk_start, on_chunk_end: observers called around each chunk (``on_chunk_end``
            after that chunk's update was applied).
    """
    if not isinstance(rule, LearningRule):
        raise TypeError(f"`rule` must be a chronograd LearningRule, got {type(rule).__name__}")
    check_cell(model, "model")
    check_sequence(xs, model)
    check_like_model(xs, model)
    check_targets(xs, targets)
    if not isinstance(objective, Objective):
        raise TypeError(
            f"`objective` must be a chronograd Objective, got {type(objective).__name__}"
        )
    check_driver_options(rule, accumulate, transform)
    T, B = xs.shape[0], xs.shape[1]
    if objective.last is not None and objective.last > T:
        raise ValueError(
            f"the objective counts the last {objective.last} steps (last={objective.last}) but "
            f"the sequences have T = {T} steps; use last <= {T} or longer sequences"
        )
    if state is None:
        state = model.init_state(B, device=xs.device, dtype=xs.dtype)  # type: ignore[operator]
    else:
        check_state(state, B)
    if carry is None:
        carry = rule.init(model, state)
    elif isinstance(rule, PersistentCarry):
        carry = rule.start_sequence(model, state, carry)
    else:
        carry = rule.init(model, state)
    tstate = None if transform is None else transform.init()
    total: Grads | None = None
    total_updates: Grads | None = None
    pending: Grads | None = None
    losses: list[Tensor] = []
    outs: list[Any] = []
    n_updates = nonfinite = 0

    def handed_on(grads: Grads, updates: Grads | None, span: Span) -> Update:
        nonlocal tstate
        if transform is not None and grads:
            grads, tstate = transform.update(grads, tstate)
        return Update(grads, updates, span, B)

    for span in spans(T, rule.chunk_length(T)):
        if on_chunk_start is not None:
            on_chunk_start(span)
        chunk = Chunk(xs[span.start : span.stop], _slice_time(targets, span), span)
        step = rule.update(model, chunk, state, carry, objective)
        step, status = _sanitize(rule, step, span)
        nonfinite += status != "ok"
        state, carry = step.state, step.carry
        losses.append(step.loss)
        outs.append(step.outputs)
        if status != "skip":
            total = add_grads(total, step.grads)
            total_updates = add_grads(total_updates, step.updates)
            if accumulate:
                pending = add_grads(pending, step.grads)
            elif (yield handed_on(step.grads, step.updates, span)):  # applied
                n_updates += 1
                if isinstance(rule, AfterUpdate):
                    carry = rule.after_update(model, carry, reduce)
        if on_chunk_end is not None:
            on_chunk_end(span, step)
    if (
        accumulate
        and pending is not None
        and (yield handed_on(pending, total_updates, Span(0, T, T)))
    ):
        n_updates += 1
        if isinstance(rule, AfterUpdate):
            carry = rule.after_update(model, carry, reduce)
    return SequenceResult(
        loss=float(torch.stack(losses).mean()),
        outputs=tree_cat(outs),
        state=state,
        carry=carry,
        grads=total or {},
        updates=total_updates,
        n_updates=n_updates,
        nonfinite=nonfinite,
    )


def check_driver_options(
    rule: LearningRule, accumulate: bool, transform: GradientTransform | None
) -> None:
    """Refuse, with the reason, driver options that contradict the rule."""
    if not isinstance(accumulate, bool):
        raise TypeError(f"accumulate must be a bool, got {accumulate!r}")
    if accumulate and rule.accumulate_refused is not None:
        raise ValueError(
            f"accumulate=True does not apply to {type(rule).__name__}: {rule.accumulate_refused}"
        )
    if transform is not None:
        if not isinstance(transform, GradientTransform):
            raise TypeError(
                "transform must be a chronograd.transforms.GradientTransform (ema(...), "
                f"clip_by_global_norm(...), chain(...)), got {type(transform).__name__}"
            )
        if not rule.needs_optimizer:
            raise ValueError(
                f"gradient transforms (clipping, EMA) do not apply to {type(rule).__name__}, "
                "which updates weights directly; drop transform="
            )


def run(
    updates: Generator[Update, bool | None, SequenceResult],
    apply: Callable[[Update], None] | None = None,
) -> SequenceResult:
    """Iterate a :func:`drive` generator, calling ``apply`` on each update (``None``: apply
    nothing, the rule's gradient alone); return its :class:`SequenceResult`."""
    try:
        update = next(updates)
        while True:
            if apply is None:
                update = next(updates)
            else:
                apply(update)
                update = updates.send(True)
    except StopIteration as stop:
        result: SequenceResult = stop.value
        return result


def gradient(
    rule: LearningRule,
    model: nn.Module,
    xs: Tensor,
    targets: Any,
    objective: Objective,
    *,
    state: State | None = None,
) -> dict[str, Tensor]:
    """The gradient ``rule`` produces for one batch of sequences, without applying it.

    The sum over chunks of each chunk's raw gradient (before clipping or averaging), for the
    parameters the rule trains. This is what every oracle test compares with BPTT.

    Args:
        xs: ``(T, B, I)`` inputs, time first. targets: time-first targets.
        state: initial model state (default zeros).

    Returns:
        ``{param_name: gradient}`` with each gradient shaped like its parameter.
    """
    return run(drive(rule, model, xs, targets, objective, state=state)).grads
