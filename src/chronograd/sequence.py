"""Time utilities written once: ``unroll``, chunking into spans, ``detach``.

Sequences are time-first: ``xs`` has shape ``(T, B, features)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from chronograd._tree import detach, tree_cat, tree_leaves, tree_map, tree_stack, tree_unflatten
from chronograd.cells.base import HoistedCell, State, check_cell

__all__ = [
    "Span",
    "check_sequence",
    "detach",
    "spans",
    "state_batch_size",
    "time_first",
    "unroll",
    "unroll_states",
]


class Span(NamedTuple):
    """Steps ``[start, stop)`` of a sequence of ``total`` steps (what a chunk covers)."""

    start: int
    stop: int
    total: int

    @property
    def length(self) -> int:
        """Number of steps in the span, ``stop - start``."""
        return self.stop - self.start


def spans(total: int, size: int | None) -> Iterator[Span]:
    """Split ``total`` steps into consecutive spans of ``size`` (the last may be shorter).

    ``size=None`` gives one span covering the whole sequence.
    """
    if total < 1:
        raise ValueError(f"a sequence needs at least one time step, got T={total}")
    if size is None:
        yield Span(0, total, total)
        return
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, total, size):
        yield Span(start, min(start + size, total), total)


def check_sequence(xs: Any, cell: nn.Module | None = None, name: str = "xs") -> None:
    """Validate a time-first input ``(T, B, features...)``; raise ``TypeError``/``ValueError``."""
    if not isinstance(xs, Tensor):
        raise TypeError(
            f"`{name}` must be a tensor of shape (T, B, features), got {type(xs).__name__}"
        )
    if xs.dim() < 3:
        raise ValueError(
            f"`{name}` must have shape (T, B, features) (time first), got shape {tuple(xs.shape)}; "
            "add a feature axis with xs.unsqueeze(-1) or a time axis with xs.unsqueeze(0)"
        )
    if xs.shape[0] == 0 or xs.shape[1] == 0:
        raise ValueError(f"`{name}` is empty: shape {tuple(xs.shape)} (need T >= 1 and B >= 1)")
    expected = getattr(cell, "input_size", None) if cell is not None else None
    if expected is not None and (xs.dim() != 3 or xs.shape[-1] != expected):
        raise ValueError(
            f"`{name}` must have shape (T, B, {expected}) for this cell, got {tuple(xs.shape)}"
        )


def _run(
    cell: nn.Module, xs: Tensor, state: State, states: list[State] | None
) -> tuple[Any, State]:
    if isinstance(cell, HoistedCell):
        us = cell.input_map(xs)  # one batched map over all T steps
        step = cell.step
    else:
        us, step = xs, cell
    # unbind, not us[t]: indexing would make every step's backward allocate and fill a full
    # (T, B, K) gradient (quadratic in T); unbind has one stacked backward.
    per_step = _unbind_time(us, xs.shape[0])
    ys = []
    for t in range(xs.shape[0]):
        y, state = step(per_step[t], state)
        ys.append(y)
        if states is not None:
            states.append(state)
    return tree_stack(ys), state


def _unbind_time(tree: Any, T: int) -> list[Any]:
    """Split every leaf of ``tree`` along dim 0 into ``T`` per-step trees."""
    if isinstance(tree, Tensor):
        return list(tree.unbind(0))
    leaves = tree_leaves(tree)
    parts = [leaf.unbind(0) for leaf in leaves]
    return [tree_unflatten(tree, [p[t] for p in parts]) for t in range(T)]


def _segment(cell: nn.Module, xs: Tensor, state: State) -> tuple[Any, State]:
    return _run(cell, xs, state, None)


def unroll_states(cell: nn.Module, xs: Tensor, state: State) -> tuple[Any, list[State]]:
    """Like :func:`unroll` but returns every intermediate state: ``states[t]`` after step ``t``."""
    states: list[State] = []
    ys, _ = _run(cell, xs, state, states)
    return ys, states


def unroll(
    cell: nn.Module, xs: Tensor, state: State | None = None, *, checkpoint: int | None = None
) -> tuple[Any, State]:
    """Run ``cell`` over a sequence.

    Args:
        cell: a chronograd cell.
        xs: ``(T, B, I)`` inputs, time first.
        state: initial state (default ``cell.init_state(B)`` on ``xs``'s device and dtype).
        checkpoint: if set, recompute activations in segments of this many steps during the
            backward pass (activation checkpointing over time: memory ``O(T/k + k)`` steps for
            one extra forward pass).

    Returns:
        ``(ys, final_state)`` with ``ys`` the stacked outputs ``(T, B, O)`` (a dict of stacked
        tensors if the cell returns a dict).
    """
    check_cell(cell)
    check_sequence(xs, cell)
    if state is None:
        state = cell.init_state(xs.shape[1], device=xs.device, dtype=xs.dtype)  # type: ignore[operator]
    if checkpoint is None or not torch.is_grad_enabled():
        return _segment(cell, xs, state)
    if checkpoint < 1:
        raise ValueError(f"checkpoint must be >= 1 steps, got {checkpoint}")
    outs = []
    for start in range(0, xs.shape[0], checkpoint):
        ys, state = _checkpoint(
            _segment, cell, xs[start : start + checkpoint], state, use_reentrant=False
        )
        outs.append(ys)
    return tree_cat(outs), state


def state_batch_size(state: State) -> int | None:
    """The batch size of a state (first dim of its first tensor), or None for an empty state."""
    leaves = tree_leaves(state)
    return int(leaves[0].shape[0]) if leaves else None


def time_first(x: Any, time_dim: int) -> Any:
    """Move ``time_dim`` of every tensor leaf to dimension 0 (no-op when it is already 0)."""
    if time_dim == 0:
        return x
    return tree_map(lambda t: t.movedim(time_dim, 0), x)
