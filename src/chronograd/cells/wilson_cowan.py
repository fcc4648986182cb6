"""Wilson–Cowan firing-rate cell, with learnable time constants and optional Dale's law.

Continuous dynamics (Wilson & Cowan 1972, "Excitatory and inhibitory interactions in localized
populations of model neurons", Biophys. J. 12), one rate ``r_i ∈ [0, 1]`` per population::

    τ dr/dt = −r + (1 − κ r) ⊙ f(r W + x W_in − μ)

discretised with forward Euler over a step ``dt``::

    r_t = r_{t−1} + (dt/τ) ⊙ (−r_{t−1} + (1 − κ r_{t−1}) ⊙ f(r_{t−1} W + x_t W_in − μ))

``κ`` is the refractory factor: ``κ = 1`` is the classic ``(1 − r)`` term, ``κ = 0`` drops it.
This is NeuroTorch's ``WilsonCowanLayer`` exactly: its forward is documented as
``output = input·(1 − dt/τ) + dt/τ·(1 − input·r)·sigmoid(input @ forward_weight − mu)`` with
``r`` our ``κ`` (its default 0) and ``mu`` our threshold ``μ``. With ``f = sigmoid``, ``κ = 1``
and ``dt ≤ τ``, rates starting in ``[0, 1]`` stay there.

Conventions:

* ``W[pre, post]``: the recurrent weight is ``(H, H)`` with presynaptic rows, applied as
  ``r @ W`` (so ``(r W)_j = Σ_i r_i W_ij``); ``W_in`` is ``(I, H)``, applied as ``x @ W_in``.
* Dale's law (``dale=``): ``W = |W̃| ⊙ s[:, None]``, a fixed sign ``s_i = ±1`` per presynaptic
  neuron (a buffer); every outgoing weight of neuron ``i`` has sign ``s_i`` whatever ``W̃`` is.
  With Dale's law the recurrent map is no longer a bare parameter, so the relation engine and
  RLS's linear strategies do not see it (train it with BPTT or RLS ``jacobian``).
* ``τ = exp(log_tau)`` per neuron: positive by construction, learnable (``learn_tau``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, final

import torch
from torch import Tensor, nn

from chronograd.cells.base import Cell, Device, zeros_state
from chronograd.cells.rnn import _activation, _check_sizes


class WCState(NamedTuple):
    """``r``: (B, H) firing rates."""

    r: Tensor


def dale_signs(hidden_size: int, dale: float | Tensor) -> Tensor:
    """Per-neuron signs ``(H,)`` of ``±1``: a fraction of excitatory neurons (first) or given."""
    if isinstance(dale, Tensor):
        s = dale.detach().flatten().to(torch.get_default_dtype())
        if s.numel() != hidden_size or not bool(((s == 1) | (s == -1)).all()):
            raise ValueError(
                f"dale signs must be a tensor of {hidden_size} values in {{+1, -1}} (one per "
                f"presynaptic neuron), got shape {tuple(dale.shape)}"
            )
        return s.clone()
    if isinstance(dale, bool) or not isinstance(dale, (int, float)) or not 0.0 <= dale <= 1.0:
        raise ValueError(
            f"dale must be the fraction of excitatory neurons in [0, 1] or a tensor of signs, "
            f"got {dale!r}"
        )
    n_exc = round(dale * hidden_size)
    s = -torch.ones(hidden_size)
    s[:n_exc] = 1.0
    return s


@final
class WilsonCowan(Cell):
    """Wilson–Cowan rate layer (see the module docstring for the equations and conventions).

    Args:
        input_size: ``I``; hidden_size: ``H`` populations.
        dt: Euler step, same unit as ``tau``.
        tau: initial time constant(s), a number or ``(H,)`` values, ``> 0``.
        learn_tau: train ``τ`` (through ``log_tau``).
        refractory: ``κ ≥ 0`` (1: classic Wilson–Cowan; 0: NeuroTorch's default).
        threshold: initial ``μ`` (number or ``(H,)``); ``learn_threshold`` trains it.
        activation: ``f``, ``"sigmoid"`` (default) or another name/callable.
        dale: None, the fraction of excitatory neurons (e.g. 0.8), or ``(H,)`` signs ``±1``.
        weight_scale: ``W̃ ~ N(0, weight_scale² / H)``, ``W_in ~ N(0, 1 / I)``.

    Shapes: ``x_t`` (B, I) -> ``r_t`` (B, H); state :class:`WCState` (zeros initially).
    Parameters: ``input_weight`` (I, H), ``recurrent_weight`` (H, H) (``W̃`` under Dale's law),
    ``log_tau`` (H,), ``threshold`` (H,); buffer ``sign`` (H,) under Dale's law.
    """

    sign: Tensor | None

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        dt: float = 1.0,
        tau: float | Tensor = 10.0,
        learn_tau: bool = True,
        refractory: float = 1.0,
        threshold: float | Tensor = 0.0,
        learn_threshold: bool = False,
        activation: str | Callable[[Tensor], Tensor] = "sigmoid",
        dale: float | Tensor | None = None,
        weight_scale: float = 1.0,
    ) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        if not dt > 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        if not refractory >= 0:
            raise ValueError(f"refractory (kappa) must be >= 0, got {refractory}")
        tau_t = torch.as_tensor(tau, dtype=torch.get_default_dtype()).flatten()
        if tau_t.numel() not in (1, hidden_size) or not bool((tau_t > 0).all()):
            raise ValueError(f"tau must be > 0, a number or {hidden_size} values, got {tau!r}")
        mu = torch.as_tensor(threshold, dtype=torch.get_default_dtype()).flatten()
        if mu.numel() not in (1, hidden_size):
            raise ValueError(f"threshold must be a number or {hidden_size} values")
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.dt = float(dt)
        self.refractory = float(refractory)
        self.activation = _activation(activation)
        self.input_weight = nn.Parameter(
            torch.randn(input_size, hidden_size) / math.sqrt(input_size)
        )
        w = torch.randn(hidden_size, hidden_size) * (weight_scale / math.sqrt(hidden_size))
        if dale is not None:
            self.register_buffer("sign", dale_signs(hidden_size, dale))
            w = w.abs()
        else:
            self.sign = None
        self.recurrent_weight = nn.Parameter(w)
        self.log_tau = nn.Parameter(
            tau_t.log().expand(hidden_size).clone(), requires_grad=learn_tau
        )
        self.threshold = nn.Parameter(mu.expand(hidden_size).clone(), requires_grad=learn_threshold)

    @property
    def tau(self) -> Tensor:
        """``τ = exp(log_tau)``, ``(H,)``: positive whatever ``log_tau`` becomes."""
        return self.log_tau.exp()

    def effective_weight(self) -> Tensor:
        """The recurrent ``W[pre, post]`` used in the step (``|W̃| ⊙ s`` under Dale's law)."""
        if self.sign is None:
            return self.recurrent_weight
        return self.recurrent_weight.abs() * self.sign[:, None]

    def init_state(
        self, batch_size: int, *, device: Device = None, dtype: torch.dtype | None = None
    ) -> WCState:
        return WCState(zeros_state(self, (batch_size, self.hidden_size), device, dtype))

    def forward(self, x: Tensor, state: WCState) -> tuple[Tensor, WCState]:
        r = state.r
        recurrent = r @ self.recurrent_weight if self.sign is None else r @ self.effective_weight()
        drive = self.activation(recurrent + x @ self.input_weight - self.threshold)
        gate = 1.0 - self.refractory * r if self.refractory != 0.0 else 1.0
        r = r + (self.dt / self.tau) * (-r + gate * drive)
        return r, WCState(r)
