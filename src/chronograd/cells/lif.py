"""Leaky integrate-and-fire (LIF) and adaptive LIF (ALIF, LSNN) cells.

Discrete-time dynamics as in Bellec et al. (2018, 2020), with ``α = exp(-dt/τ_m)``,
``ρ = exp(-dt/τ_a)`` and ``z_{t-1} = H((v_{t-1} - A_{t-1}) / v_th)`` the previous step's spikes::

    v_t = α v_{t-1} + W_in x_t + W_rec z_{t-1} - z_{t-1} v_th          (reset by subtraction)
    a_t = ρ a_{t-1} + z_{t-1}                                          (ALIF only)
    A_t = v_th + β a_t                                                 (LIF: β = 0, A = v_th)
    z_t = H((v_t - A_t) / v_th)                                        (output y_t = z_t)

``H`` has a surrogate derivative (default :class:`~chronograd.cells.surrogate.Triangle`, so
``∂z/∂v = (γ/v_th) max(0, 1 - |v - A|/v_th)``). The reset term's gradient is stopped by default
(``detach_reset=True``), as in the e-prop reference code.

The state holds only the membrane potential (and the adaptation variable): the spikes are a
function of it, recomputed at the start of the next step, which keeps LIF a one-variable neuron
(``S = 1``) and ALIF a two-variable one (``S = 2``) for the eligibility-trace rules.
"""

from __future__ import annotations

import math
from typing import NamedTuple, final

import torch
from torch import Tensor, nn

from chronograd.cells.base import Device, HoistedCell, zeros_state
from chronograd.cells.rnn import _check_sizes
from chronograd.cells.surrogate import Surrogate, Triangle, decay, get_surrogate


class LIFState(NamedTuple):
    """``v``: (B, H) membrane potential."""

    v: Tensor


class ALIFState(NamedTuple):
    """``v``: (B, H) membrane potential; ``a``: (B, H) threshold adaptation."""

    v: Tensor
    a: Tensor


class _Spiking(HoistedCell):
    """Shared parameters of LIF and ALIF (abstract: use one of those)."""

    alpha: Tensor  # buffer: membrane decay exp(-dt / tau_mem)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        recurrent: bool,
        tau_mem: float,
        threshold: float,
        surrogate: str | Surrogate,
        detach_reset: bool,
        bias: bool,
        dt: float,
        weight_scale: float,
    ) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.threshold = float(threshold)
        self.surrogate = get_surrogate(surrogate)
        self.detach_reset = bool(detach_reset)
        self.register_buffer("alpha", torch.tensor(decay(tau_mem, dt)))
        self.input = nn.Linear(input_size, hidden_size, bias=bias)
        self.recurrent = nn.Linear(hidden_size, hidden_size, bias=False) if recurrent else None
        # e-prop's initialisation: N(0, 1) / sqrt(fan_in), times weight_scale.
        with torch.no_grad():
            self.input.weight.normal_(0.0, weight_scale / math.sqrt(input_size))
            if self.input.bias is not None:
                self.input.bias.zero_()
            if self.recurrent is not None:
                self.recurrent.weight.normal_(0.0, weight_scale / math.sqrt(hidden_size))

    def input_map(self, x: Tensor) -> Tensor:
        return self.input(x)

    def _membrane(self, u: Tensor, v: Tensor, z_prev: Tensor) -> Tensor:
        """``α v + u + W_rec z_{t-1} - z_{t-1} v_th`` (reset gradient stopped if configured)."""
        return self._integrate(self._synaptic_input(u, z_prev), v, z_prev)

    def _synaptic_input(self, u: Tensor, z_prev: Tensor) -> Tensor:
        """``u + W_rec z_{t-1}``: the input map plus the recurrent spikes (if any)."""
        return u if self.recurrent is None else u + self.recurrent(z_prev)

    def _integrate(self, i: Tensor, v: Tensor, z_prev: Tensor) -> Tensor:
        """``α v + i - z_{t-1} v_th``: leak, input current, reset by subtraction."""
        reset = z_prev.detach() if self.detach_reset else z_prev
        return self.alpha * v + i - reset * self.threshold

    def spikes(self, v: Tensor, threshold: Tensor | float) -> Tensor:
        """``H((v - A) / v_th)`` with the surrogate derivative."""
        return self.surrogate((v - threshold) / self.threshold)


@final
class LIF(_Spiking):
    """Leaky integrate-and-fire layer (see the module docstring for the equations).

    Args:
        input_size: ``I``; hidden_size: ``H``.
        recurrent: include ``W_rec`` (H, H) (False: a feed-forward spiking layer).
        tau_mem: membrane time constant in steps of ``dt`` (``α = exp(-dt/τ_m)``).
        threshold: ``v_th``.
        surrogate: ``"triangle"`` (default, γ = 0.3), ``"fast_sigmoid"``, ``"sigmoid"`` or an
            instance.
        detach_reset: stop the gradient through the reset term (default True).
        bias: add a bias to the input map.
        dt: step length, same unit as the time constants.
        weight_scale: initial weights ~ ``N(0, weight_scale² / fan_in)``.

    Shapes: ``x_t`` (B, I) -> spikes ``z_t`` (B, H); state :class:`LIFState`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        recurrent: bool = True,
        tau_mem: float = 20.0,
        threshold: float = 1.0,
        surrogate: str | Surrogate = Triangle(),
        detach_reset: bool = True,
        bias: bool = False,
        dt: float = 1.0,
        weight_scale: float = 1.0,
    ) -> None:
        super().__init__(
            input_size, hidden_size, recurrent=recurrent, tau_mem=tau_mem, threshold=threshold,
            surrogate=surrogate, detach_reset=detach_reset, bias=bias, dt=dt,
            weight_scale=weight_scale,
        )  # fmt: skip

    def init_state(
        self, batch_size: int, *, device: Device = None, dtype: torch.dtype | None = None
    ) -> LIFState:
        return LIFState(zeros_state(self, (batch_size, self.hidden_size), device, dtype))

    def step(self, u: Tensor, state: LIFState) -> tuple[Tensor, LIFState]:
        z_prev = self.spikes(state.v, self.threshold)
        v = self._membrane(u, state.v, z_prev)
        return self.spikes(v, self.threshold), LIFState(v)


@final
class ALIF(_Spiking):
    """Adaptive LIF layer (LSNN, Bellec et al. 2018); ``β = 0`` neurons are plain LIF.

    Args:
        tau_adapt: adaptation time constant (``ρ = exp(-dt/τ_a)``).
        beta: adaptation strength ``β`` in units of ``v_th`` per spike; a float, or an ``(H,)``
            tensor for a mixed population (see :func:`lsnn_beta`).
        other arguments: as :class:`LIF`.

    Shapes: ``x_t`` (B, I) -> spikes ``z_t`` (B, H); state :class:`ALIFState`.
    """

    beta: Tensor  # buffer: adaptation strength in voltage units, () or (H,)
    rho: Tensor  # buffer: adaptation decay exp(-dt / tau_adapt)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        recurrent: bool = True,
        tau_mem: float = 20.0,
        tau_adapt: float = 2000.0,
        beta: float | Tensor = 0.16,
        threshold: float = 1.0,
        surrogate: str | Surrogate = Triangle(),
        detach_reset: bool = True,
        bias: bool = False,
        dt: float = 1.0,
        weight_scale: float = 1.0,
    ) -> None:
        super().__init__(
            input_size, hidden_size, recurrent=recurrent, tau_mem=tau_mem, threshold=threshold,
            surrogate=surrogate, detach_reset=detach_reset, bias=bias, dt=dt,
            weight_scale=weight_scale,
        )  # fmt: skip
        beta_t = torch.as_tensor(beta, dtype=torch.get_default_dtype())
        if beta_t.dim() > 1 or (beta_t.dim() == 1 and beta_t.numel() != hidden_size):
            raise ValueError(
                f"beta must be a float or a ({hidden_size},) tensor, got shape {tuple(beta_t.shape)}"
            )
        if (beta_t < 0).any():
            raise ValueError("beta must be >= 0")
        self.register_buffer("beta", beta_t * self.threshold)
        self.register_buffer("rho", torch.tensor(decay(tau_adapt, dt)))

    def init_state(
        self, batch_size: int, *, device: Device = None, dtype: torch.dtype | None = None
    ) -> ALIFState:
        shape = (batch_size, self.hidden_size)
        return ALIFState(
            zeros_state(self, shape, device, dtype), zeros_state(self, shape, device, dtype)
        )

    def step(self, u: Tensor, state: ALIFState) -> tuple[Tensor, ALIFState]:
        z_prev = self.spikes(state.v, self.threshold + self.beta * state.a)
        v = self._membrane(u, state.v, z_prev)
        a = self.rho * state.a + z_prev
        return self.spikes(v, self.threshold + self.beta * a), ALIFState(v, a)


def lsnn_beta(n_lif: int, n_alif: int, beta: float = 0.16) -> Tensor:
    """Per-neuron ``β`` for an LSNN layer: ``n_lif`` plain LIF neurons then ``n_alif`` ALIF ones."""
    return torch.cat([torch.zeros(n_lif), torch.full((n_alif,), float(beta))])
