"""Turning a batch from a data source into time-first tensors on the trainer's device."""

from __future__ import annotations

from typing import Any

import torch

from chronograd._tree import tree_map


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
    if device is None:
        return x, y
    return (
        tree_map(lambda t: t.to(device, non_blocking=non_blocking), x),
        tree_map(lambda t: t.to(device, non_blocking=non_blocking), y),
    )
