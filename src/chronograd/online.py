"""One-call online training with SpikingJelly's signatures (for users coming from it).

These are thin wrappers: each builds the rule (:class:`~chronograd.rules.OTTT`,
:class:`~chronograd.rules.SLTT` or :class:`~chronograd.rules.FPTT`) and runs one batch of
sequences through :func:`~chronograd.training.run_sequence` with the given optimizer. The model is
a chronograd cell (e.g. :func:`~chronograd.cells.spiking_mlp`); each call starts from the
model's initial (zero) state, so there is no ``reset_net`` to call.

**Time axes differ between the two helpers, as in SpikingJelly, so they drop in unchanged:**

* :func:`fptt_online_training` takes **time-first** ``[T, N, ...]`` sequences;
* :func:`ottt_online_training` takes **batch-first** ``[B, T, ...]`` sequences and returns
  batch-first outputs.

(Everything else in chronograd is time-first.) A difference in time length between inputs and
targets raises ``ValueError`` instead of SpikingJelly's ``IndexError`` half-way through.

``f_loss_t(y_t, target_t) -> scalar`` is the loss of one step (e.g. ``F.mse_loss``); the loss
of a sequence is the **sum** over steps, as in SpikingJelly.

Where the algorithms differ from SpikingJelly's (on purpose, following the papers): FPTT's
regulariser is a sum over elements (not a per-element mean), its gradient correction is the
paper's, and the running average is updated by the dual form (one forward and one backward
pass per step; see :mod:`chronograd.rules.fptt`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from chronograd.cells.base import check_cell
from chronograd.objectives import Objective
from chronograd.rules.base import RuleStep
from chronograd.rules.fptt import FPTT, FPTTCarry
from chronograd.rules.ottt import OTTT
from chronograd.rules.sltt import SLTT
from chronograd.sequence import Span
from chronograd.training.apply import apply_to_model, run_sequence

StepLoss = Callable[[Tensor, Tensor], Tensor]


class RunningAverages(list[Tensor]):
    """FPTT's ``w_ra``: a list of ``W̄`` tensors in the optimizer's parameter order.

    It is a plain list for the user; it also carries the correction ``λ`` of each parameter
    (``.dual``), so that consecutive calls of :func:`fptt_online_training` continue FPTT
    exactly as the rule driven by the trainer does. A plain list works too (``λ`` then starts
    from zero at every call).
    """

    dual: list[Tensor] | None = None


def _optimizer_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Names (in the model) of the optimizer's parameters, in ``param_groups`` order."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch optimizer, got {type(optimizer).__name__}")
    by_id = {id(p): n for n, p in model.named_parameters()}
    names = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in by_id:
                raise ValueError(
                    "the optimizer updates a tensor that is not a parameter of `model`; build it "
                    "over model.parameters()"
                )
            names.append(by_id[id(p)])
    return names


def _step_objective(f_loss_t: StepLoss) -> Objective:
    """An objective whose window loss is ``Σ_t f_loss_t(y_t, target_t)``."""
    if not callable(f_loss_t):
        raise TypeError("f_loss_t must be callable: f_loss_t(y_t, target_t) -> scalar tensor")

    def per_sample(outputs: Tensor, targets: Tensor) -> Tensor:  # (T, B, ...) -> (T, B)
        T, B = outputs.shape[0], outputs.shape[1]
        steps = [f_loss_t(outputs[t], targets[t]) for t in range(T)]
        if any(s.dim() != 0 for s in steps):
            raise ValueError(
                "f_loss_t must return a scalar (a reduced loss of one step), e.g. F.mse_loss"
            )
        return (torch.stack(steps) / B)[:, None].expand(T, B)  # Σ_b = f_loss_t

    return Objective(per_sample, reduction="sum")


def _check_lengths(x_seq: Any, target_seq: Any, time_dim: int, layout: str, fn: str) -> None:
    for name, v in (("x_seq", x_seq), ("target_seq", target_seq)):
        if not isinstance(v, Tensor) or v.dim() < 2:
            raise ValueError(f"{fn}: {name} must be a tensor shaped {layout}")
    if x_seq.shape[time_dim] != target_seq.shape[time_dim]:
        raise ValueError(
            f"{fn}: x_seq and target_seq differ in time length ({x_seq.shape[time_dim]} vs "
            f"{target_seq.shape[time_dim]} steps on dim {time_dim}); this helper takes {layout} "
            "sequences (SpikingJelly's convention)"
        )
    batch_dim = 1 - time_dim
    if x_seq.shape[batch_dim] != target_seq.shape[batch_dim]:
        raise ValueError(
            f"{fn}: x_seq and target_seq differ in batch size ({x_seq.shape[batch_dim]} vs "
            f"{target_seq.shape[batch_dim]}); this helper takes {layout} sequences"
        )


def fptt_online_training_init_w_ra(optimizer: torch.optim.Optimizer) -> RunningAverages:
    """The running averages ``W̄ = W`` for :func:`fptt_online_training`.

    Args:
        optimizer: the optimizer of the network.

    Returns:
        a list (a :class:`RunningAverages`) of clones of the optimizer's parameters, in the
        order of ``optimizer.param_groups``; ``λ = 0`` for each.
    """
    params = [p for g in optimizer.param_groups for p in g["params"]]
    w_ra = RunningAverages(p.detach().clone() for p in params)
    w_ra.dual = [torch.zeros_like(p) for p in params]
    return w_ra


def fptt_online_training(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x_seq: Tensor,
    target_seq: Tensor,
    f_loss_t: StepLoss,
    alpha: float,
    w_ra: list[Tensor],
) -> None:
    """Train ``model`` on one batch of sequences with FPTT, one update per step.

    Equivalent to ``FPTT(alpha)`` over the optimizer's parameters driven by
    :func:`~chronograd.training.run_sequence` with ``optimizer``; ``w_ra`` is updated in place
    (its elements are replaced by the new ``W̄``).

    Args:
        model: a chronograd cell.
        optimizer: updates the trained parameters (its parameters are the ones FPTT trains).
        x_seq: inputs, **time-first** ``[T, N, ...]`` (SpikingJelly's FPTT convention).
        target_seq: targets, **time-first** ``[T, N, ...]``.
        f_loss_t: ``f_loss_t(y_t, target_t) -> scalar`` loss of one step.
        alpha: FPTT's ``α``.
        w_ra: the running averages from :func:`fptt_online_training_init_w_ra`.
    """
    check_cell(model, "model")
    _check_lengths(x_seq, target_seq, 0, "time-first [T, N, ...]", "fptt_online_training")
    names = _optimizer_names(model, optimizer)
    if not isinstance(w_ra, list) or len(w_ra) != len(names):
        raise ValueError(
            f"w_ra must be the list from fptt_online_training_init_w_ra(optimizer) with one "
            f"tensor per optimizer parameter ({len(names)}), got "
            f"{len(w_ra) if isinstance(w_ra, list) else type(w_ra).__name__}"
        )
    rule = FPTT(alpha=alpha, params=tuple(names))
    dual = getattr(w_ra, "dual", None)
    carry = FPTTCarry(
        dict(zip(names, w_ra)),
        dict(zip(names, dual))
        if dual is not None
        else {n: torch.zeros_like(w) for n, w in zip(names, w_ra)},
    )
    result = run_sequence(
        rule, model, x_seq, target_seq, _step_objective(f_loss_t), carry=carry,
        apply=apply_to_model(model, optimizer),
    )  # fmt: skip
    for i, n in enumerate(names):
        w_ra[i] = result.carry.w_bar[n]
    if isinstance(w_ra, RunningAverages):
        w_ra.dual = [result.carry.lam[n] for n in names]


def ottt_online_training(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x_seq: Tensor,
    target_seq: Tensor,
    f_loss_t: StepLoss,
    online: bool,
    *,
    rule: OTTT | SLTT | None = None,
) -> tuple[Tensor, Tensor]:
    """Train ``model`` on one batch of sequences with OTTT (or SLTT).

    Equivalent to ``OTTT(chunk_size=1 if online else None)`` over the optimizer's parameters driven by
    :func:`~chronograd.training.run_sequence` with ``optimizer``: one update per step
    (``online=True``) or one per sequence with the step gradients summed.

    Args:
        model: a chronograd cell.
        optimizer: updates the trained parameters.
        x_seq: inputs, **batch-first** ``[B, T, ...]`` (SpikingJelly's OTTT convention).
        target_seq: targets, **batch-first** ``[B, T, ...]``.
        f_loss_t: ``f_loss_t(y_t, target_t) -> scalar`` loss of one step.
        online: update at every step, or once per sequence.
        rule: a configured ``OTTT`` or ``SLTT`` (e.g. ``SLTT()`` for SLTT training, or
            ``OTTT(trace_input=True)``); its ``chunk_size`` and ``params`` are set from the call.

    Returns:
        ``(loss, outputs)``: the detached sum of the step losses (a scalar tensor) and the
        detached outputs, **batch-first** ``[B, T, ...]``.
    """
    check_cell(model, "model")
    _check_lengths(x_seq, target_seq, 1, "batch-first [B, T, ...]", "ottt_online_training")
    if rule is None:
        rule = OTTT()
    elif not isinstance(rule, (OTTT, SLTT)):
        raise TypeError(f"rule must be an OTTT or SLTT rule, got {type(rule).__name__}")
    names = _optimizer_names(model, optimizer)
    rule = dataclasses.replace(rule, chunk_size=1 if online else None, params=tuple(names))
    losses: list[Tensor] = []

    def chunk_done(span: Span, step: RuleStep) -> None:
        losses.append(step.loss)

    result = run_sequence(
        rule, model, x_seq.transpose(0, 1), target_seq.transpose(0, 1),
        _step_objective(f_loss_t), apply=apply_to_model(model, optimizer),
        on_chunk_end=chunk_done,
    )  # fmt: skip
    outputs: Tensor = result.outputs
    return torch.stack(losses).sum(), outputs.transpose(0, 1)


__all__ = [
    "RunningAverages",
    "fptt_online_training",
    "fptt_online_training_init_w_ra",
    "ottt_online_training",
]
