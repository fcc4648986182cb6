"""Per-layer activity of a model over a sequence, without hooks.

A :class:`~chronograd.cells.Stack` is a feed-forward composition of cells: layer ``l`` at step
``t`` sees only layer ``l-1``'s output at step ``t`` and its own state. So running the layers
*one after the other over the whole sequence* gives exactly the same outputs and states as
running the stack step by step (up to the rounding of batched matmuls), and every intermediate quantity is then an ordinary return
value::

    acts = record(model, xs)            # xs: (T, B, I)
    acts[0].output                      # (T, B, H) layer 0's outputs: spikes for LIF/ALIF
    acts[0].state["v"]                  # (T, B, H) its membrane potential after each step
    acts[-1].output                     # (T, B, O) the readout

For LIF/ALIF cells the output *is* the spike train ``z_t = H((v_t - A_t)/v_th)``, a function of
the state the cell returns, so nothing needs to be intercepted. A state field that is a
``NamedTuple`` field appears under its name (``v``, ``a``, ``h``, ``y``); other state trees are
flattened to ``s0, s1, ...``. Nested stacks are flattened into their layers; any other cell is
one layer.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from chronograd._tree import _is_namedtuple, tree_leaves, tree_stack
from chronograd.cells.base import State, check_cell
from chronograd.cells.stack import Stack
from chronograd.sequence import check_sequence, unroll_states

__all__ = ["LayerActivity", "is_binary", "layers_of", "record"]


class LayerActivity(NamedTuple):
    """What one layer did over a sequence.

    Attributes:
        position: index of the layer in the (flattened) stack.
        name: ``"<position>:<class name>"``, e.g. ``"0:ALIF"``.
        output: the layer's outputs ``(T, B, F)`` (spikes ``z_t`` for spiking layers).
        state: ``{field: (T, B, ...)}``, each state field after every step.
        spiking: the output is a 0/1 spike train.
    """

    position: int
    name: str
    output: Any
    state: dict[str, Tensor]
    spiking: bool


def layers_of(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` in order: a stack's layers (nested stacks flattened), or itself."""
    check_cell(model, "model")
    if not isinstance(model, Stack):
        return [model]
    out: list[nn.Module] = []
    for layer in model.layers:
        out.extend(layers_of(layer))
    return out


def is_binary(t: Any) -> bool:
    """True for a floating tensor whose every element is 0 or 1 (a spike train)."""
    return (
        isinstance(t, Tensor)
        and t.is_floating_point()
        and t.numel() > 0
        and bool(((t == 0) | (t == 1)).all())
    )


def _fields(states: list[State]) -> dict[str, Tensor]:
    """Stack per-step states into ``{field: (T, B, ...)}``."""
    if not states:
        return {}
    stacked = tree_stack(states)
    if _is_namedtuple(stacked):
        return {k: v for k, v in stacked._asdict().items() if isinstance(v, Tensor)}
    return {f"s{i}": leaf for i, leaf in enumerate(tree_leaves(stacked))}


def _split_state(model: nn.Module, state: State | None, n_layers: int) -> list[State | None]:
    """One initial state per flattened layer (``None``: each layer's zero state)."""
    if state is None:
        return [None] * n_layers
    if not isinstance(model, Stack):
        return [state]
    out: list[State | None] = []
    for layer, s in zip(model.layers, state):
        out.extend(_split_state(layer, s, len(layers_of(layer))))
    return out


@torch.no_grad()
def record(model: nn.Module, xs: Tensor, state: State | None = None) -> list[LayerActivity]:
    """Run ``model`` over ``xs`` layer by layer and return every layer's outputs and states.

    Args:
        model: a chronograd cell, typically a :class:`~chronograd.cells.Stack`.
        xs: ``(T, B, I)`` inputs, time first.
        state: initial model state (default: zeros), structured as ``model.init_state``.

    Returns:
        One :class:`LayerActivity` per layer, input side first. The last layer's ``output``
        equals ``unroll(model, xs, state)[0]`` up to floating-point rounding (a later layer's
        input map runs as one batched matmul over all ``T`` here, per step inside a stack);
        exactly in float64 on the shipped cells.
    """
    check_sequence(xs, model)
    layers = layers_of(model)
    inits = _split_state(model, state, len(layers))
    out: list[LayerActivity] = []
    h: Any = xs
    for i, (layer, s0) in enumerate(zip(layers, inits)):
        if s0 is None:
            s0 = layer.init_state(xs.shape[1], device=xs.device, dtype=xs.dtype)  # type: ignore[operator]
        h, states = unroll_states(layer, h, s0)
        out.append(
            LayerActivity(i, f"{i}:{type(layer).__name__}", h, _fields(states), is_binary(h))
        )
    return out
