"""Current-based LIF: a two-state neuron whose synaptic current feeds the membrane.

With ``α = exp(-dt/τ_m)``, ``α_s = exp(-dt/τ_s)`` and ``z_{t-1} = H((v_{t-1} - v_th) / v_th)`` the
previous step's spikes (recomputed from ``v``, as in :mod:`chronograd.cells.lif`)::

    i_t = α_s i_{t-1} + W_in x_t + W_rec z_{t-1}                       (synaptic current)
    v_t = α v_{t-1} + i_t - z_{t-1} v_th                               (reset by subtraction)
    z_t = H((v_t - v_th) / v_th)                                       (output y_t = z_t)

Both ``i`` and ``v`` are state, so every neuron has ``S = 2`` state variables and the weights
reach the membrane only through the current. Without recurrent weights the state-to-state
Jacobian is block-diagonal per neuron, so D-RTRL is exact for this cell; its learning signal
must then be the *partial* derivative within the neuron (``∂ℓ_t/∂i_t = 0`` here, since ``i_t``
reaches the loss only through ``v_t``, a path the trace already covers), not the total one.
"""

from __future__ import annotations

from typing import NamedTuple, final

import torch
from torch import Tensor

from chronograd.cells.base import Device, zeros_state
from chronograd.cells.lif import _Spiking
from chronograd.cells.surrogate import Surrogate, Triangle, decay


class SynapticLIFState(NamedTuple):
    """``v``: (B, H) membrane potential; ``i``: (B, H) synaptic current."""

    v: Tensor
    i: Tensor


@final
class SynapticLIF(_Spiking):
    """LIF neurons driven by an exponentially filtered synaptic current (see the module doc).

    Args:
        input_size: ``I``; hidden_size: ``H``.
        tau_syn: synaptic time constant (``α_s = exp(-dt/τ_s)``).
        other arguments: as :class:`~chronograd.cells.LIF` (``recurrent``, ``tau_mem``,
            ``threshold``, ``surrogate``, ``detach_reset``, ``bias``, ``dt``, ``weight_scale``).

    Shapes: ``x_t`` (B, I) -> spikes ``z_t`` (B, H); state :class:`SynapticLIFState`.
    """

    alpha_syn: Tensor  # buffer: synaptic decay exp(-dt / tau_syn)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        recurrent: bool = True,
        tau_mem: float = 20.0,
        tau_syn: float = 5.0,
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
        self.register_buffer("alpha_syn", torch.tensor(decay(tau_syn, dt)))

    def init_state(
        self, batch_size: int, *, device: Device = None, dtype: torch.dtype | None = None
    ) -> SynapticLIFState:
        shape = (batch_size, self.hidden_size)
        return SynapticLIFState(
            zeros_state(self, shape, device, dtype), zeros_state(self, shape, device, dtype)
        )

    def step(self, u: Tensor, state: SynapticLIFState) -> tuple[Tensor, SynapticLIFState]:
        z_prev = self.spikes(state.v, self.threshold)
        i = self.alpha_syn * state.i + self._synaptic_input(u, z_prev)
        v = self._integrate(i, state.v, z_prev)
        return self.spikes(v, self.threshold), SynapticLIFState(v, i)
