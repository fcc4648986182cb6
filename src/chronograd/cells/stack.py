"""Compose cells (and stateless maps) into one cell: ``x -> layer_0 -> ... -> layer_{L-1}``.

The state of a Stack is a tuple with one state per layer. When the first layer is a
:class:`~chronograd.cells.base.HoistedCell`, the Stack hoists its input map too.
"""

from __future__ import annotations

import itertools
from typing import Any, final

import torch
from torch import Tensor, nn

from chronograd.cells.base import Device, HoistedCell, State, check_cell


@final
class Stack(HoistedCell):
    """A feed-forward composition of cells, itself a cell.

    Args:
        *layers: cells (``LIF``, ``GRU``, ``LeakyReadout``, ``Map(nn.Linear(...))``...), applied in
            order; the output of layer ``l`` is the input of layer ``l + 1``.

    Shapes: ``x_t`` (B, layers[0].input_size) -> ``y_t`` of the last layer. State: a tuple of the
    layers' states.
    """

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        if not layers:
            raise ValueError("Stack needs at least one layer")
        for i, layer in enumerate(layers):
            check_cell(layer, f"layers[{i}]")
        for i, (a, b) in enumerate(itertools.pairwise(layers)):
            out, inp = getattr(a, "output_size", None), getattr(b, "input_size", None)
            if out is not None and inp is not None and out != inp:
                raise ValueError(
                    f"layer {i} outputs {out} features but layer {i + 1} expects {inp}; "
                    "make the sizes agree"
                )
        self.layers = nn.ModuleList(layers)
        first, last = layers[0], layers[-1]
        size_in, size_out = getattr(first, "input_size", None), getattr(last, "output_size", None)
        if size_in is not None:
            self.input_size = int(size_in)
        if size_out is not None:
            self.output_size = int(size_out)

    def init_state(
        self, batch_size: int, *, device: Device = None, dtype: torch.dtype | None = None
    ) -> tuple[State, ...]:
        return tuple(
            layer.init_state(batch_size, device=device, dtype=dtype)  # type: ignore[operator]
            for layer in self.layers
        )

    def input_map(self, x: Tensor) -> Any:
        first = self.layers[0]
        return first.input_map(x) if isinstance(first, HoistedCell) else x

    def step(self, u: Any, state: tuple[State, ...]) -> tuple[Any, tuple[State, ...]]:
        first = self.layers[0]
        if isinstance(first, HoistedCell):
            y, s0 = first.step(u, state[0])
        else:
            y, s0 = first(u, state[0])
        new = [s0]
        for layer, s in zip(list(self.layers)[1:], state[1:]):
            y, s = layer(y, s)
            new.append(s)
        return y, tuple(new)
