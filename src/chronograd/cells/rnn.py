"""Leaky rate RNN (``alpha = 0``: the plain tanh RNN) and GRU.

LeakyRNN::

    h_t = α h_{t-1} + (1 - α) φ(W_in x_t + W_rec h_{t-1} + b)          h: (B, H)

GRU (PyTorch's gate convention)::

    r = σ(W_ir x + b_ir + W_hr h + b_hr)      z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

Every gate has its own ``nn.Linear`` so each trainable weight maps its inputs onto the
``H`` neurons one-to-one (what the eligibility-trace engine expects of a relation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, final

import torch
from torch import Tensor, nn

from chronograd.cells.base import Device, HoistedCell, zeros_state

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
}


def _activation(spec: str | Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    if callable(spec):
        return spec
    if spec in ACTIVATIONS:
        return ACTIVATIONS[spec]
    raise ValueError(f"unknown activation {spec!r}; expected one of {sorted(ACTIVATIONS)}")


def _check_sizes(input_size: int, hidden_size: int) -> None:
    for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


class RNNState(NamedTuple):
    """``h``: (B, H) hidden activity."""

    h: Tensor


@final
class LeakyRNN(HoistedCell):
    """Leaky rate RNN ``h_t = α h_{t-1} + (1-α) φ(W_in x_t + W_rec h_{t-1} + b)``.

    Args:
        input_size: ``I``.
        hidden_size: ``H``.
        alpha: leak ``α ∈ [0, 1)``; 0 gives the plain (Elman) RNN.
        activation: ``"tanh"`` (default), ``"relu"``, ``"sigmoid"``, ``"identity"`` or a callable.
        recurrent: include ``W_rec`` (False: a bank of independent leaky units).
        bias: include ``b`` (in the input map).

    Shapes: ``x_t`` (B, I) -> ``y_t = h_t`` (B, H).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        alpha: float = 0.0,
        activation: str | Callable[[Tensor], Tensor] = "tanh",
        recurrent: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.alpha = float(alpha)
        self.activation = _activation(activation)
        self.input = nn.Linear(input_size, hidden_size, bias=bias)
        self.recurrent = nn.Linear(hidden_size, hidden_size, bias=False) if recurrent else None

    def init_state(
        self, batch_size: int, *, device: Device = None, dtype: torch.dtype | None = None
    ) -> RNNState:
        return RNNState(zeros_state(self, (batch_size, self.hidden_size), device, dtype))

    def input_map(self, x: Tensor) -> Tensor:
        return self.input(x)

    def step(self, u: Tensor, state: RNNState) -> tuple[Tensor, RNNState]:
        h = state.h
        a = u if self.recurrent is None else u + self.recurrent(h)
        phi = self.activation(a)
        h = phi if self.alpha == 0.0 else self.alpha * h + (1.0 - self.alpha) * phi
        return h, RNNState(h)


@final
class GRU(HoistedCell):
    """Gated recurrent unit (Cho et al. 2014) with PyTorch's gate equations.

    Shapes: ``x_t`` (B, I) -> ``y_t = h_t`` (B, H). Parameters: ``input_{r,z,n}`` (H, I) with
    biases, ``hidden_{r,z,n}`` (H, H) with biases.
    """

    def __init__(self, input_size: int, hidden_size: int, *, bias: bool = True) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.input_r = nn.Linear(input_size, hidden_size, bias=bias)
        self.input_z = nn.Linear(input_size, hidden_size, bias=bias)
        self.input_n = nn.Linear(input_size, hidden_size, bias=bias)
        self.hidden_r = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.hidden_z = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.hidden_n = nn.Linear(hidden_size, hidden_size, bias=bias)
        bound = hidden_size**-0.5
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def init_state(
        self, batch_size: int, *, device: Device = None, dtype: torch.dtype | None = None
    ) -> RNNState:
        return RNNState(zeros_state(self, (batch_size, self.hidden_size), device, dtype))

    def input_map(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.input_r(x), self.input_z(x), self.input_n(x)

    def step(self, u: tuple[Tensor, Tensor, Tensor], state: RNNState) -> tuple[Tensor, RNNState]:
        ur, uz, un = u
        h = state.h
        r = torch.sigmoid(ur + self.hidden_r(h))
        z = torch.sigmoid(uz + self.hidden_z(h))
        n = torch.tanh(un + r * self.hidden_n(h))
        h = (1.0 - z) * n + z * h
        return h, RNNState(h)
