"""Regularization in the trainer: an explicit own-optimizer step, and weight metrics.

- :class:`RegularizerStep` steps a regularizer's *own* optimizer on its penalty after every
  update of the trainer (explicitly attached, never implied), then re-applies the trainer's
  constraints so they still hold.
- :func:`regularizer_metrics` and :func:`dale_metrics` build ``Trainer(metrics=...)`` entries:
  regularizer values, excitatory / inhibitory fractions and sign violations. They land in the
  history (``<name>`` averaged over the epoch's batches, ``val_<name>`` at validation) and in
  the progress bar's epoch line, like any metric::

      trainer = Trainer(model, BPTT(), Objective("mse", regularizers=[dale]), metrics={
          **regularizer_metrics(dale),
          **dale_metrics(rec.weight, signs, pre_dim=1, name="rec"),
      })
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from chronograd.constraints import apply_constraints
from chronograd.dale import excitatory_fraction, sign_violations
from chronograd.regularizers import Regularizer
from chronograd.training.events import Event

Metric = Callable[[Any, Any], float]


class RegularizerStep:
    """After every update, one step of ``optimizer`` on ``regularizer`` alone.

    Attach it with ``RegularizerStep(reg, torch.optim.SGD(params, lr=1e-2)).attach(trainer)``.
    The trainer updates once per chunk (``CHUNK_COMPLETED``), or once per sequence when the rule
    accumulates (``BATCH_COMPLETED``); the handler fires at that event. The trainer's
    ``constraints`` are applied again after the step.

    Attributes:
        steps: how many steps were taken.
        last: the penalty's value before the latest step (NaN before the first).
    """

    def __init__(self, regularizer: Regularizer, optimizer: torch.optim.Optimizer) -> None:
        if not isinstance(regularizer, Regularizer):
            raise TypeError(
                f"regularizer must be a chronograd Regularizer, got {type(regularizer).__name__}"
            )
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch optimizer, got {type(optimizer).__name__}")
        self.regularizer, self.optimizer = regularizer, optimizer
        self.steps = 0
        self.last = float("nan")

    def attach(self, trainer: Any) -> RegularizerStep:
        """Step after every applied update of ``trainer``; returns ``self``."""
        self.regularizer.to(trainer.device)
        event = Event.BATCH_COMPLETED if trainer.accumulate else Event.CHUNK_COMPLETED
        trainer.add_handler(event, self)
        return self

    def __call__(self, trainer: Any) -> None:
        self.last = float(self.regularizer.minimize(self.optimizer))
        self.steps += 1
        apply_constraints(trainer.constraints)


def _value(fn: Callable[[], float]) -> Metric:
    def metric(outputs: Any, targets: Any) -> float:
        with torch.no_grad():
            return fn()

    return metric


def _metric_of(reg: Regularizer, key: str) -> Callable[[], float]:
    return lambda: reg.metrics()[key]


def regularizer_metrics(*regularizers: Regularizer) -> dict[str, Metric]:
    """``{key: metric}`` for every value of each regularizer's ``metrics()``.

    Keys are the regularizer's ``name`` (its value ``Λ·R``) plus what it adds:
    ``<name>_violations`` for the Dale penalties, ``<name>_exc_ratio`` / ``<name>_inh_ratio``
    for the ratio targets (the true fractions, not the surrogate).
    """
    out: dict[str, Metric] = {}
    for r in regularizers:
        if not isinstance(r, Regularizer):
            raise TypeError(f"expected chronograd Regularizers, got {type(r).__name__}")
        for key in r.metrics():
            if key in out:
                raise ValueError(f"two regularizers report {key!r}; give them distinct names")
            out[key] = _value(_metric_of(r, key))
    return out


def dale_metrics(
    weight: Tensor,
    signs: Tensor | None = None,
    *,
    pre_dim: int | None = None,
    name: str = "w",
) -> dict[str, Metric]:
    """Excitatory / inhibitory fractions of ``weight`` and, given ``signs``, its sign violations.

    Keys: ``<name>_exc_ratio = (mean(sign W) + 1)/2``, ``<name>_inh_ratio = 1 − exc``, and
    ``<name>_sign_violations = #{S ⊙ W < 0}`` (signs per presynaptic neuron with ``pre_dim``, or
    element-wise; see :mod:`chronograd.dale`).
    """
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a tensor, got {type(weight).__name__}")
    out: dict[str, Metric] = {
        f"{name}_exc_ratio": _value(lambda: float(excitatory_fraction(weight))),
        f"{name}_inh_ratio": _value(lambda: 1.0 - float(excitatory_fraction(weight))),
    }
    if signs is not None:
        sign_violations(weight, signs, pre_dim=pre_dim)  # validate shapes now, not mid-run
        out[f"{name}_sign_violations"] = _value(
            lambda: float(sign_violations(weight, signs, pre_dim=pre_dim))
        )
    return out
