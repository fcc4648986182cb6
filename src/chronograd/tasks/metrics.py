"""Task metrics and the one task-specific criterion.

Every metric is a :class:`~chronograd.tasks.base.Metric` ``fn(outputs (T, B, O), targets)``
with its trivial baseline ``chance`` (what a network that has learnt nothing gets):

- :func:`recall_error`: arg-max of the logits averaged over a fixed final window (evidence,
  delayed match-to-sample); chance ``1 - 1/C`` for ``C`` balanced classes.
- :func:`period_error`: the same per recall period, for recall periods that vary per sample
  (store-recall; targets ``-1`` outside recall periods).
- :func:`accuracy`: arg-max of the logits averaged over the last ``last`` steps (sequence
  classification); chance is the majority-class frequency.
- :func:`normalised_mse`: ``MSE / Var(target)``; chance 1 (predicting the target's mean).
- :func:`final_mse`: squared error at the last step (adding problem).
- :func:`bits_per_char`: mean binary cross-entropy in bits over the steps a mask selects (copy
  task); chance 1 (predicting 1/2).

:func:`masked_cross_entropy` is a criterion for :class:`~chronograd.objectives.Objective`:
softmax cross-entropy per step with target ``-1`` meaning "no loss here".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from chronograd.tasks.base import Metric

IGNORE = -1  # class target of steps that carry no loss (masked_cross_entropy, period_error)


def recall_error(recall: int, chance: float = 0.5) -> Metric:
    """1 - accuracy of the arg-max of logits averaged over the last ``recall`` steps.

    ``targets``: class indices ``(T, B)`` (the label at the last step is used).
    """

    def fn(outputs: Tensor, targets: Tensor) -> float:
        pred = outputs[-recall:].mean(0).argmax(-1)  # (B,)
        return float((pred != targets[-1]).float().mean())

    return Metric("recall_error", fn, higher_is_better=False, chance=chance)


def period_error(period: int, chance: float = 0.5) -> Metric:
    """Recall error over recall periods of ``period`` steps (the sequence is a whole number of
    periods); a period is a recall period where its targets are ``>= 0``.

    The prediction of a period is the arg-max of the logits averaged over it.
    """

    def fn(outputs: Tensor, targets: Tensor) -> float:
        T, B, C = outputs.shape
        logits = outputs.reshape(T // period, period, B, C).mean(1)  # (P, B, C)
        target = targets[::period]  # (P, B)
        recall = target != IGNORE
        n = int(recall.sum())
        if n == 0:
            return float("nan")
        wrong = (logits.argmax(-1) != target) & recall
        return float(wrong.sum()) / n

    return Metric("recall_error", fn, higher_is_better=False, chance=chance)


def accuracy(last: int, chance: float) -> Metric:
    """Accuracy of the arg-max of logits averaged over the last ``last`` steps.

    ``targets``: class indices ``(T, B)``; ``chance``: the majority-class frequency.
    """

    def fn(outputs: Tensor, targets: Tensor) -> float:
        pred = outputs[-last:].mean(0).argmax(-1)  # (B,)
        return float((pred == targets[-1]).float().mean())

    return Metric("accuracy", fn, higher_is_better=True, chance=chance)


def normalised_mse(variance: Tensor, chance: float = 1.0) -> Metric:
    """``mean_o [ mean_{t,b} (y - y*)² / variance_o ]`` for outputs ``(T, B, O)``.

    Args:
        variance: ``(O,)`` variance of each target feature (over time, or over a data set):
            predicting the mean scores 1.
        chance: the score of the constant predictor on the data this metric will see.
    """
    var = variance.detach().clone().reshape(-1)

    def fn(outputs: Tensor, targets: Tensor) -> float:
        err = ((outputs - targets) ** 2).reshape(-1, outputs.shape[-1]).mean(0)  # (O,)
        return float((err / var.to(err)).mean())

    return Metric("nmse", fn, higher_is_better=False, chance=chance)


def final_mse(chance: float) -> Metric:
    """Squared error at the last step, averaged over the batch (and output features)."""

    def fn(outputs: Tensor, targets: Tensor) -> float:
        return float(((outputs[-1] - targets[-1]) ** 2).mean())

    return Metric("mse", fn, higher_is_better=False, chance=chance)


def bits_per_char(mask: Callable[[int], Tensor]) -> Metric:
    """Binary cross-entropy in bits, averaged over the steps where ``mask(T)`` is 1.

    ``outputs`` are logits ``(T, B, 1)``, ``targets`` bits ``(T, B, 1)``; predicting ``1/2``
    everywhere scores exactly 1 bit per character.
    """

    def fn(outputs: Tensor, targets: Tensor) -> float:
        m = mask(outputs.shape[0]).to(device=outputs.device, dtype=torch.bool)  # (T,)
        bce = F.binary_cross_entropy_with_logits(
            outputs[m], targets[m].to(outputs.dtype), reduction="mean"
        )
        return float(bce) / math.log(2.0)

    return Metric("bits_per_char", fn, higher_is_better=False, chance=1.0)


def masked_cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Softmax cross-entropy per step, zero where the target is ``-1``: ``(T, B, C) -> (T, B)``.

    With ``Objective(masked_cross_entropy)`` (``reduction="mean"``) the loss is the sum of the
    cross-entropies of the target steps divided by ``T·B``: a per-step weight that does not
    depend on the targets, so every window of a chunked or online rule adds exactly its share.
    """
    if outputs.dim() != 3 or targets.shape != outputs.shape[:2]:
        raise ValueError(
            f"masked_cross_entropy: logits must be (T, B, C) and targets (T, B), got "
            f"{tuple(outputs.shape)} and {tuple(targets.shape)}"
        )
    T, B, C = outputs.shape
    return F.cross_entropy(
        outputs.reshape(T * B, C), targets.reshape(T * B).long(), ignore_index=IGNORE,
        reduction="none",
    ).view(T, B)  # fmt: skip
