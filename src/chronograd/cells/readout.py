"""Leaky readout ``y_t = κ y_{t-1} + W_out z_t + b`` (``κ = 0``: a linear readout)."""

from __future__ import annotations

from typing import NamedTuple, final

import torch
from torch import Tensor, nn

from chronograd.cells.base import Device, HoistedCell, zeros_state
from chronograd.cells.rnn import _check_sizes


class ReadoutState(NamedTuple):
    """``y``: (B, O) readout value."""

    y: Tensor


@final
class LeakyReadout(HoistedCell):
    """Leaky integrator readout (e-prop's output neurons).

    Args:
        input_size: ``H`` presynaptic units.
        output_size: ``O`` outputs.
        kappa: leak ``κ ∈ [0, 1)`` (0: ``y_t = W_out z_t + b``).
        bias: include ``b``.

    Shapes: ``z_t`` (B, H) -> ``y_t`` (B, O).
    """

    def __init__(
        self, input_size: int, output_size: int, *, kappa: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        _check_sizes(input_size, output_size)
        if not 0.0 <= kappa < 1.0:
            raise ValueError(f"kappa must lie in [0, 1), got {kappa}")
        self.input_size, self.output_size = input_size, output_size
        self.kappa = float(kappa)
        self.input = nn.Linear(input_size, output_size, bias=bias)

    def init_state(
        self, batch_size: int, *, device: Device = None, dtype: torch.dtype | None = None
    ) -> ReadoutState:
        return ReadoutState(zeros_state(self, (batch_size, self.output_size), device, dtype))

    def input_map(self, x: Tensor) -> Tensor:
        return self.input(x)

    def step(self, u: Tensor, state: ReadoutState) -> tuple[Tensor, ReadoutState]:
        y = u if self.kappa == 0.0 else self.kappa * state.y + u
        return y, ReadoutState(y)
