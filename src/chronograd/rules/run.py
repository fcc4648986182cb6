"""The chunk driver shared by :func:`gradient` and the trainer.

:func:`run_sequence` splits one batch of sequences into chunks, asks the rule for each chunk's
gradient and hands the (post-processed) gradient to an ``apply`` callback, which takes the
optimizer step. :func:`gradient` runs the same loop without applying anything and returns the
summed gradient: the quantity every oracle compares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from chronograd._tree import tree_cat, tree_leaves, tree_map
from chronograd.cells.base import State, check_cell, param_like
from chronograd.objectives import Objective
from chronograd.rules.base import Carry, Grads, LearningRule, RuleStep, add_grads
from chronograd.sequence import Span, check_sequence, spans

Apply = Callable[[Grads, Grads | None], None]
ChunkHook = Callable[[Span, RuleStep | None], None]


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


class NonFiniteError(FloatingPointError):
    """An update's gradient held NaN or inf and the rule's policy is ``nonfinite="raise"``."""


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
    if rule.nonfinite == "raise":
        raise NonFiniteError(
            f"{type(rule).__name__} produced a non-finite gradient for {sorted(set(bad))} in "
            f"steps [{span.start}, {span.stop}) of {span.total}; lower the learning rate, clip "
            "gradients (clip_grad_norm=...), or set nonfinite='skip' or 'replace' on the rule"
        )

    def fix(t: Tensor) -> Tensor:
        if not t.is_floating_point():
            return t
        if rule.nonfinite == "skip":
            return torch.where(torch.isfinite(t), t, torch.zeros_like(t))
        return torch.nan_to_num(t, nan=rule.nan, posinf=rule.posinf, neginf=rule.neginf)

    repaired = RuleStep(
        grads={k: fix(v) for k, v in step.grads.items()},
        state=tree_map(fix, step.state),
        carry=tree_map(fix, step.carry),
        loss=step.loss,
        outputs=step.outputs,
        updates=None if step.updates is None else {k: fix(v) for k, v in step.updates.items()},
    )
    return repaired, rule.nonfinite


def _slice_time(tree: Any, span: Span) -> Any:
    return tree_map(lambda t: t[span.start : span.stop], tree)


def check_targets(xs: Tensor, targets: Any) -> None:
    """Targets must be time-first with the inputs' ``T`` and ``B``."""
    leaves = tree_leaves(targets)
    if not leaves:
        raise TypeError("targets must be a tensor (or a dict of tensors), time first")
    for t in leaves:
        if t.dim() < 2 or t.shape[0] != xs.shape[0] or t.shape[1] != xs.shape[1]:
            raise ValueError(
                f"targets must be time-first with the inputs' (T, B) = {tuple(xs.shape[:2])}, got "
                f"shape {tuple(t.shape)}; mismatched time lengths between inputs and targets, or "
                "a per-sequence label that needs repeating over time (y.expand(T, B))"
            )


def check_like_model(xs: Tensor, model: nn.Module) -> None:
    """Inputs must match the model's dtype and device and be finite."""
    device, dtype = param_like(model)
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


class _Postprocess:
    """Bias-corrected EMA then global-norm clipping of applied gradients (per sequence)."""

    def __init__(self, rule: LearningRule) -> None:
        self.rule = rule
        self.ema: Grads | None = None
        self.n = 0

    def __call__(self, grads: Grads) -> Grads:
        beta = self.rule.grad_ema
        if beta is not None:
            self.n += 1
            if self.ema is None:
                self.ema = {k: (1 - beta) * g for k, g in grads.items()}
            else:
                self.ema = {k: beta * self.ema[k] + (1 - beta) * g for k, g in grads.items()}
            corr = 1.0 - beta**self.n
            grads = {k: g / corr for k, g in self.ema.items()}
        clip = self.rule.clip_grad_norm
        if clip is not None and grads:
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads.values()])
            )
            scale = torch.clamp(clip / (norm + 1e-12), max=1.0)
            grads = {k: g * scale for k, g in grads.items()}
        return grads


def run_sequence(
    rule: LearningRule,
    model: nn.Module,
    xs: Tensor,
    targets: Any,
    objective: Objective,
    *,
    state: State | None = None,
    carry: Carry | None = None,
    apply: Apply | None = None,
    on_chunk_start: Callable[[Span], None] | None = None,
    on_chunk_end: Callable[[Span, RuleStep], None] | None = None,
) -> SequenceResult:
    """Run ``rule`` over one batch of time-first sequences ``xs`` (``(T, B, I)``).

    Args:
        rule, model, objective: what to train, on what, for what.
        targets: time-first targets (``(T, B, ...)`` or a dict of them).
        state: initial model state (default ``model.init_state(B)``).
        carry: the rule's carry from the previous sequence (default ``rule.init``); passed
            through ``rule.start_sequence``.
        apply: ``apply(grads, updates)`` takes an optimizer step; ``None`` applies nothing.
        on_chunk_start, on_chunk_end: observers called around each chunk.
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
    T, B = xs.shape[0], xs.shape[1]
    if state is None:
        state = model.init_state(B, device=xs.device, dtype=xs.dtype)  # type: ignore[operator]
    carry = rule.init(model, state) if carry is None else carry
    carry = rule.start_sequence(model, state, carry)
    post = _Postprocess(rule)
    total: Grads | None = None
    total_updates: Grads | None = None
    pending: Grads | None = None
    losses: list[Tensor] = []
    outs: list[Any] = []
    n_updates = nonfinite = 0
    for span in spans(T, rule.chunk_length(T)):
        if on_chunk_start is not None:
            on_chunk_start(span)
        step = rule.update(
            model,
            xs[span.start : span.stop],
            _slice_time(targets, span),
            state,
            carry,
            objective,
            span,
        )
        step, status = _sanitize(rule, step, span)
        nonfinite += status != "ok"
        state, carry = step.state, step.carry
        losses.append(step.loss)
        outs.append(step.outputs)
        if status == "skip":
            if on_chunk_end is not None:
                on_chunk_end(span, step)
            continue
        total = add_grads(total, step.grads)
        total_updates = add_grads(total_updates, step.updates)
        if rule.accumulate:
            pending = add_grads(pending, step.grads)
        elif apply is not None:
            apply(post(step.grads), step.updates)
            n_updates += 1
            carry = rule.after_update(model, carry)
        if on_chunk_end is not None:
            on_chunk_end(span, step)
    if rule.accumulate and apply is not None and pending is not None:
        apply(post(pending), total_updates)
        n_updates += 1
        carry = rule.after_update(model, carry)
    loss = torch.stack(losses).mean()
    return SequenceResult(
        loss=float(loss),
        outputs=tree_cat(outs),
        state=state,
        carry=carry,
        grads=total or {},
        updates=total_updates,
        n_updates=n_updates,
        nonfinite=nonfinite,
    )


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
    return run_sequence(rule, model, xs, targets, objective, state=state).grads


def apply_to_model(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    constraints: Sequence[Callable[[], object]] = (),
) -> Apply:
    """An ``apply`` callback: write ``grads`` to ``.grad`` and step ``optimizer``; add ``updates``.

    ``constraints`` (e.g. :class:`chronograd.constraints.DaleProjection`) are called in order
    after the optimizer step and the direct updates, so they hold after every update.
    """
    params = dict(model.named_parameters())
    constraints = tuple(constraints)
    for c in constraints:
        if not callable(c):
            raise TypeError(f"a constraint must be callable () -> None, got {type(c).__name__}")

    def apply(grads: Grads, updates: Grads | None) -> None:
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
