"""Diagonal linear recurrence (a real-valued LRU, Orvieto et al. 2023): element-wise memory.

Each neuron keeps its own leaky memory with a learnable decay::

    λ = exp(-exp(ν))                         (per neuron, in (0, 1); ν: (H,) parameter)
    γ = sqrt(1 - λ²)  (normalize=True, LRU's input normalisation; else γ = 1)
    h_t = λ ⊙ h_{t-1} + γ ⊙ (W_in x_t + b)
    y_t = φ(h_t)                             (φ: identity by default)

The recurrence is element-wise, so the state-to-state Jacobian is diagonal and D-RTRL is exact
for this cell: ``W_in``/``b`` form an input relation and ``ν`` is a per-neuron parameter with its
own exact trace. Stack several (with ``φ`` nonlinear, or with maps in between) for depth.

Orvieto et al. (2023), "Resurrecting recurrent neural networks for long sequences" (the LRU;
this is its real-valued, diagonal form without the complex phase).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import final

import torch
from torch import Tensor, nn

from chronograd.cells.base import Device, HoistedCell, zeros_state
from chronograd.cells.rnn import RNNState, _activation, _check_sizes


@final
class DiagonalRNN(HoistedCell):
    """Element-wise linear recurrence with learnable per-neuron decays (see the module doc).

    Args:
        input_size: ``I``; hidden_size: ``H``.
        decay_range: initial decays ``λ`` drawn uniformly from ``[r_min, r_max] ⊂ (0, 1)``.
        normalize: scale the input by ``γ = sqrt(1 - λ²)`` (keeps ``h`` of unit scale).
        activation: ``φ`` applied to the output (``"identity"``, ``"tanh"``, ``"relu"``...).
        bias: include ``b`` in the input map.

    Shapes: ``x_t`` (B, I) -> ``y_t = φ(h_t)`` (B, H); state :class:`~chronograd.cells.RNNState`.
    Parameters: ``input.weight`` (H, I), ``input.bias`` (H,), ``nu`` (H,) with ``λ = exp(-exp(ν))``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        decay_range: tuple[float, float] = (0.5, 0.99),
        normalize: bool = True,
        activation: str | Callable[[Tensor], Tensor] = "identity",
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        r_min, r_max = decay_range
        if not 0.0 < r_min <= r_max < 1.0:
            raise ValueError(f"decay_range must satisfy 0 < r_min <= r_max < 1, got {decay_range}")
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.normalize = bool(normalize)
        self.activation = _activation(activation)
        self.input = nn.Linear(input_size, hidden_size, bias=bias)
        lam = torch.empty(hidden_size).uniform_(r_min, r_max)
        self.nu = nn.Parameter(torch.log(-torch.log(lam)))
        with torch.no_grad():
            self.input.weight.normal_(0.0, 1.0 / math.sqrt(input_size))

    def decay(self) -> Tensor:
        """``λ = exp(-exp(ν))``, shape (H,)."""
        return torch.exp(-torch.exp(self.nu))

    def init_state(
        self, batch_size: int, *, device: Device = None, dtype: torch.dtype | None = None
    ) -> RNNState:
        return RNNState(zeros_state(self, (batch_size, self.hidden_size), device, dtype))

    def input_map(self, x: Tensor) -> Tensor:
        return self.input(x)

    def step(self, u: Tensor, state: RNNState) -> tuple[Tensor, RNNState]:
        lam = self.decay()
        drive = torch.sqrt(1.0 - lam * lam) * u if self.normalize else u
        h = lam * state.h + drive
        return self.activation(h), RNNState(h)
