"""Gradient transforms applied between a rule and the optimizer (optax's ``chain`` idea).

A transform is a pair ``init() -> state`` and ``update(grads, state) -> (grads, state)``. The
driver starts a fresh state at every sequence and passes each gradient it hands on (one per
update) through the transform::

    transform = chain(ema(0.9), clip_by_global_norm(1.0))
    trainer = Trainer(model, rule, objective, transform=transform)

Transforms never see direct updates (rules such as RLS that move weights themselves).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

Grads = dict[str, Tensor]


class GradientTransform(NamedTuple):
    """``init() -> state`` and ``update(grads, state) -> (grads, state)``."""

    init: Callable[[], Any]
    update: Callable[[Grads, Any], tuple[Grads, Any]]


def ema(beta: float) -> GradientTransform:
    """Bias-corrected moving average ``ḡ ← β ḡ + (1-β) g``, handing on ``ḡ / (1 - βⁿ)``.

    Args:
        beta: ``β ∈ [0, 1)``.
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta < 1.0:
        raise ValueError(f"ema's beta must lie in [0, 1), got {beta!r}")

    def update(grads: Grads, state: tuple[Grads | None, int]) -> tuple[Grads, Any]:
        avg, n = state
        if avg is None:
            avg = {k: (1 - beta) * g for k, g in grads.items()}
        else:
            avg = {k: beta * avg[k] + (1 - beta) * g for k, g in grads.items()}
        corr = 1.0 - beta ** (n + 1)
        return {k: g / corr for k, g in avg.items()}, (avg, n + 1)

    return GradientTransform(lambda: (None, 0), update)


def clip_by_global_norm(max_norm: float) -> GradientTransform:
    """Scale the gradient so that the norm of all its tensors together is at most ``max_norm``."""
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm > 0:
        raise ValueError(f"clip_by_global_norm's max_norm must be > 0, got {max_norm!r}")

    def update(grads: Grads, state: None) -> tuple[Grads, None]:
        if not grads:
            return grads, state
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for g in grads.values()])
        )
        scale = torch.clamp(max_norm / (norm + 1e-12), max=1.0)
        return {k: g * scale for k, g in grads.items()}, state

    return GradientTransform(lambda: None, update)


def chain(*transforms: GradientTransform) -> GradientTransform:
    """Apply ``transforms`` in order (the first one sees the rule's gradient)."""
    for t in transforms:
        if not isinstance(t, GradientTransform):
            raise TypeError(
                f"chain takes GradientTransforms (ema(...), clip_by_global_norm(...)), got "
                f"{type(t).__name__}"
            )

    def update(grads: Grads, states: tuple[Any, ...]) -> tuple[Grads, tuple[Any, ...]]:
        out = []
        for t, s in zip(transforms, states):
            grads, s = t.update(grads, s)
            out.append(s)
        return grads, tuple(out)

    return GradientTransform(lambda: tuple(t.init() for t in transforms), update)


__all__ = ["GradientTransform", "chain", "clip_by_global_norm", "ema"]
