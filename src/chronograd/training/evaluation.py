"""Evaluating a model without learning: the sample-weighted mean loss and metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from chronograd.objectives import Objective
from chronograd.sequence import unroll
from chronograd.training.distributed import DistributedContext, reduce_sums


@torch.no_grad()
def evaluate(
    model: nn.Module,
    objective: Objective,
    batches: Iterable[tuple[Tensor, Any]],
    metrics: Mapping[str, Callable[[Any, Any], Any]],
    distributed: DistributedContext | None = None,
) -> dict[str, float]:
    """Mean loss and metrics over time-first batches ``(x, y)``; keys ``loss`` and the metric
    names. ``distributed``: sum over ranks before dividing. The model is left in train mode."""
    model.eval()
    total, n, sums = 0.0, 0, dict.fromkeys(metrics, 0.0)
    for x, y in batches:
        outputs, _ = unroll(model, x)
        b = x.shape[1]
        total += float(objective.loss(outputs, y)) * b
        for k, fn in metrics.items():
            sums[k] += float(fn(outputs, y)) * b
        n += b
    model.train()
    if distributed is not None:
        red = reduce_sums({"total": total, "n": n, **{f"m:{k}": v for k, v in sums.items()}})
        total, n, sums = red["total"], int(red["n"]), {k: red[f"m:{k}"] for k in sums}
    if n == 0:
        raise ValueError("the validation data produced no batches")
    return {"loss": total / n, **{k: v / n for k, v in sums.items()}}
