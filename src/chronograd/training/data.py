"""Data sources of a trainer, and turning a batch into tensors on the trainer's device.

A source is a re-iterable of batches (a list, a DataLoader) or a callable ``epoch -> batches``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from chronograd._tree import tree_map

Batches = Iterable[Any] | Callable[[int], Iterable[Any]]


def check_reiterable(**sources: Batches | None) -> None:
    """Refuse a one-shot iterator among ``sources``: it would be empty after the first epoch."""
    for name, data in sources.items():
        # isinstance, not iter(data) is data: creating a DataLoader iterator draws a seed from
        # the global RNG, which would shift a resumed run's random stream.
        if data is not None and not callable(data) and isinstance(data, Iterator):
            raise ValueError(
                f"{name} data is a one-shot iterator (it would be empty after the first "
                "epoch); pass a list, a DataLoader, or a callable epoch -> batches"
            )


def epoch_batches(data: Batches, epoch: int) -> Iterable[Any]:
    """The batches of ``epoch``: ``data(epoch)`` for a callable source, else ``data``."""
    return data(epoch) if callable(data) and not hasattr(data, "__iter__") else data


def default_prepare_batch(
    batch: Any, device: torch.device | str | None = None, non_blocking: bool = False
) -> tuple[Any, Any]:
    """Split a batch ``(x, y)`` and move it to ``device``."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            f"a batch must be a pair (inputs, targets), got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    x, y = batch
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"a batch's inputs must be a tensor of shape (T, B, I) (time first), got "
            f"{type(x).__name__}; yield (x, y) pairs of tensors, e.g. torch.as_tensor(x)"
        )
    if x.dim() < 2:
        raise ValueError(
            f"a batch's inputs must be time first, (T, B, I), got shape {tuple(x.shape)}; add "
            "the missing axes (one sequence: x[:, None], one feature: x[..., None])"
        )
    if device is None:
        return x, y
    return (
        tree_map(lambda t: t.to(device, non_blocking=non_blocking), x),
        tree_map(lambda t: t.to(device, non_blocking=non_blocking), y),
    )
