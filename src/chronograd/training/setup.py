"""Checking a trainer's arguments and building its optimizer and scheduler.

Plain functions called by :class:`~chronograd.training.Trainer`'s constructor, in this order:
:func:`check_arguments`, :func:`check_regularizers`, :func:`move_modules`,
:func:`build_optimizer`, :func:`build_scheduler`, :func:`check_metrics`; by ``fit``:
:func:`check_fit_arguments`; at the end of an epoch: :func:`step_scheduler`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from chronograd.cells.base import check_cell
from chronograd.objectives import Objective
from chronograd.regularizers import Regularizer
from chronograd.rules.base import LearningRule
from chronograd.rules.driver import check_driver_options
from chronograd.training.data import Batches, check_reiterable
from chronograd.transforms import GradientTransform

Metric = Callable[[Any, Any], "float | Tensor"]
OptimizerArg = torch.optim.Optimizer | Callable[[Any], torch.optim.Optimizer] | bool | None


def check_arguments(
    model: nn.Module,
    rule: LearningRule,
    objective: Objective,
    lr: float,
    time_dim: int,
    prepare_batch: Callable[..., Any],
    accumulate: bool,
    transform: GradientTransform | None,
) -> None:
    """Raise ``TypeError``/``ValueError`` for arguments a trainer cannot use."""
    check_cell(model, "model")
    if not isinstance(rule, LearningRule):
        raise TypeError(f"`rule` must be a chronograd LearningRule, got {type(rule).__name__}")
    if not isinstance(objective, Objective):
        raise TypeError(
            f"`objective` must be a chronograd Objective, got {type(objective).__name__}"
        )
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not isinstance(time_dim, int) or isinstance(time_dim, bool) or time_dim < 0:
        raise ValueError(f"time_dim must be a non-negative int, got {time_dim!r}")
    if not callable(prepare_batch):
        raise TypeError("prepare_batch must be callable (batch, device, non_blocking) -> (x, y)")
    check_driver_options(rule, accumulate, transform)


def check_fit_arguments(epochs: int, train: Batches, val: Batches | None) -> None:
    """Raise ``ValueError`` for arguments :meth:`~chronograd.training.Trainer.fit` cannot use."""
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    check_reiterable(train=train, val=val)


def check_regularizers(
    objective: Objective, trained: Mapping[str, Tensor], rule: LearningRule
) -> None:
    """A regularizer of parameters the rule does not train would silently do nothing: raise."""
    ids = {id(p) for p in trained.values()}
    for r in objective.regularizers:
        if not isinstance(r, Regularizer):
            continue
        missing = [n for n, p in r.params.items() if id(p) not in ids]
        if missing:
            raise ValueError(
                f"regularizer {r.name} acts on {missing}, which {type(rule).__name__} does not "
                f"train (params={rule.params}), so its penalty would have no effect; regularize "
                "the model's trained parameters (e.g. dict(model.named_parameters())) or widen "
                "the rule's params"
            )


def move_modules(objs: Sequence[object], device: torch.device) -> None:
    """Move the ``nn.Module`` among ``objs`` (regularizers, constraints) to ``device``."""
    for m in objs:
        if isinstance(m, nn.Module):
            m.to(device)


def build_optimizer(
    optimizer: OptimizerArg, rule: LearningRule, trained: list[Tensor], lr: float
) -> torch.optim.Optimizer | None:
    """The trainer's optimizer from its ``optimizer`` argument (see the Trainer's docstring)."""
    if optimizer is None and not rule.needs_optimizer:
        return None
    if optimizer is None or optimizer is True:
        return torch.optim.Adam(trained, lr=lr)
    if optimizer is False:
        return None
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        return optimizer(trained)
    raise TypeError(
        f"optimizer must be a torch optimizer, a factory or None, got {type(optimizer).__name__}"
    )


def build_scheduler(scheduler: Any, optimizer: torch.optim.Optimizer | None) -> Any:
    """``scheduler`` itself, or the scheduler its factory ``optimizer -> scheduler`` builds."""
    if scheduler is not None and callable(scheduler) and not hasattr(scheduler, "step"):
        if optimizer is None:
            raise ValueError("a scheduler needs an optimizer")
        return scheduler(optimizer)
    return scheduler


def check_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """``metrics`` as a dict, each value callable ``(outputs, targets) -> float``."""
    out = dict(metrics or {})
    for name, fn in out.items():
        if not callable(fn):
            raise TypeError(f"metric {name!r} must be callable (outputs, targets) -> float")
    return out


def step_scheduler(scheduler: Any, record: Mapping[str, float]) -> None:
    """Step ``scheduler`` once at the end of an epoch (``ReduceLROnPlateau`` receives
    ``val_loss``, or the train loss without validation)."""
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(record.get("val_loss", record["loss"]))
    else:
        scheduler.step()
