"""The chaotic rate network of FORCE learning (Sussillo & Abbott 2009), as a cell.

``N`` rate units with a fixed random recurrent matrix of gain ``g`` (chaotic for ``g > 1``),
a linear readout ``z`` and a fixed feedback of ``z`` into the network, Euler-discretised::

    x_t = x_{t−1} + (dt/τ) (−x_{t−1} + g tanh(x_{t−1}) J + z_{t−1} w_fb + u_t W_in)
    z_t = tanh(x_t) W_outᵀ

``J[pre, post]`` (``(N, N)``, applied as ``r @ J``) has each entry present with probability ``p``
and drawn from ``N(0, 1/(p N))``; ``w_fb`` (``(O, N)``) is uniform in ``[−feedback, feedback]``;
``W_in`` (``(I, N)``) is ``N(0, 1)·input_scale``; ``W_out`` is an ``nn.Linear(N, O)`` without bias,
zero at the start by default (FORCE's ``w(0) = 0``). ``J`` and ``W_in`` are parameters frozen by default
(``requires_grad=False``: FORCE trains the readout only; unfreeze them to train them), ``w_fb`` is
a buffer. The initial state ``x_0`` is a fixed random vector (``N(0, init_scale²)``, a buffer:
the zero state is a fixed point of the network and would never leave it), shared by the batch.

The state keeps ``z_{t−1}``, the output as it was computed (with the readout weights of its
step): during FORCE learning the feedback is the pre-update output, as in the paper.
"""

from __future__ import annotations

import math
from typing import NamedTuple, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from chronograd.cells.base import Cell, Device, param_like
from chronograd.cells.rnn import _check_sizes


class ChaoticState(NamedTuple):
    """``x``: (B, N) currents; ``z``: (B, O) the last output (fed back)."""

    x: Tensor
    z: Tensor


@final
class ChaoticRNN(Cell):
    """Chaotic rate RNN with readout feedback, for FORCE (equations in the module docstring).

    Args:
        input_size: ``I`` (use 1 with zero inputs for an autonomous generator).
        hidden_size: ``N``.
        output_size: ``O`` readout units.
        g: gain of ``J`` (1.5 in the paper: chaotic before training).
        p: connection probability of ``J``.
        tau: time constant; ``dt``: Euler step (same unit).
        feedback: scale of ``w_fb``; 0 removes the feedback loop.
        input_scale: scale of ``W_in``.
        init_scale: scale of the initial state ``x_0``.
        readout_scale: initial ``W_out ~ N(0, readout_scale² / N)`` (0: zeros, as in FORCE).
        seed: seed of the random ``J``, ``w_fb``, ``W_in`` and ``x_0`` (None: the global RNG).

    Shapes: ``u_t`` (B, I) -> ``z_t`` (B, O); state :class:`ChaoticState`.
    """

    w_fb: Tensor
    x0: Tensor

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int = 1,
        *,
        g: float = 1.5,
        p: float = 1.0,
        tau: float = 10.0,
        dt: float = 1.0,
        feedback: float = 1.0,
        input_scale: float = 1.0,
        init_scale: float = 0.5,
        readout_scale: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        _check_sizes(output_size, hidden_size)
        if not 0.0 < p <= 1.0:
            raise ValueError(f"p (connection probability) must lie in (0, 1], got {p}")
        if not (tau > 0 and dt > 0):
            raise ValueError(f"tau and dt must be > 0, got tau={tau}, dt={dt}")
        if g < 0 or feedback < 0:
            raise ValueError(f"g and feedback must be >= 0, got g={g}, feedback={feedback}")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        n = hidden_size
        self.input_size, self.hidden_size, self.output_size = input_size, n, output_size
        self.g, self.p, self.tau, self.dt = float(g), float(p), float(tau), float(dt)
        mask = (torch.rand(n, n, generator=gen) < p).to(torch.get_default_dtype())
        J = torch.randn(n, n, generator=gen) * mask / math.sqrt(p * n)
        self.J = nn.Parameter(J, requires_grad=False)
        self.input_weight = nn.Parameter(
            torch.randn(input_size, n, generator=gen) * input_scale, requires_grad=False
        )
        self.register_buffer("w_fb", (2 * torch.rand(output_size, n, generator=gen) - 1) * feedback)
        self.register_buffer("x0", torch.randn(n, generator=gen) * init_scale)
        self.readout = nn.Linear(n, output_size, bias=False)
        with torch.no_grad():
            self.readout.weight.copy_(
                torch.randn(output_size, n, generator=gen) * (readout_scale / math.sqrt(n))
            )

    def init_state(
        self, batch_size: int, *, device: Device = None, dtype: torch.dtype | None = None
    ) -> ChaoticState:
        d, t = param_like(self)
        device = device if device is not None else d
        dtype = dtype or t
        x = self.x0.to(device=device, dtype=dtype).expand(batch_size, -1).clone()
        z = F.linear(torch.tanh(x), self.readout.weight.to(device=device, dtype=dtype))
        return ChaoticState(x, z.detach())

    def forward(self, u: Tensor, state: ChaoticState) -> tuple[Tensor, ChaoticState]:
        x, z = state
        r = torch.tanh(x)
        drive = self.g * (r @ self.J) + z @ self.w_fb + u @ self.input_weight
        x = x + (self.dt / self.tau) * (drive - x)
        z = self.readout(torch.tanh(x))
        return z, ChaoticState(x, z)
