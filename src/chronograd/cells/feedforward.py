"""Feed-forward spiking stacks: a builder and a dropout cell with one mask per sequence.

A feed-forward spiking network is a :class:`~chronograd.cells.Stack` of spiking layers, each a
linear map into a population of LIF neurons (``LIF(..., recurrent=False)``), with a readout.
Parameterless layers go in between as cells: ``Map(nn.Flatten())``, pooling as
``Map(nn.AvgPool1d(2))``, and :class:`SequenceDropout`, whose mask is drawn once per sequence
(so a neuron is either silenced for the whole sequence or not, as in SpikingJelly's
``layer.Dropout``) and kept in the state. These stacks work with every rule: BPTT/TBPTT,
OTTT, SLTT and FPTT (and the trace-based rules, which see the mask as a constant).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple, final

import torch
from torch import Tensor, nn

from chronograd.cells.base import Cell, Device, param_like
from chronograd.cells.lif import LIF
from chronograd.cells.readout import LeakyReadout
from chronograd.cells.stack import Stack
from chronograd.cells.surrogate import Surrogate, Triangle


class DropoutState(NamedTuple):
    """``mask``: (B, F) dropout mask of the sequence, scaled by ``1/(1-p)`` (ones in eval)."""

    mask: Tensor


@final
class SequenceDropout(Cell):
    """Dropout with one mask per sequence: ``y_t = m ⊙ x_t``, ``m ~ Bernoulli(1-p)/(1-p)``.

    The mask is drawn (from torch's global generator) by :meth:`init_state` when the module is
    in training mode and kept in the state; in eval mode the cell is the identity.

    Args:
        size: features ``F`` of ``x_t``.
        p: probability of dropping a unit, in ``[0, 1)``.

    Shapes: ``x_t`` (B, F) -> ``y_t`` (B, F); state :class:`DropoutState`.
    """

    def __init__(self, size: int, p: float = 0.5) -> None:
        super().__init__()
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p must lie in [0, 1), got {p}")
        self.input_size = self.output_size = size
        self.p = float(p)

    def init_state(
        self, batch_size: int, *, device: Device = None, dtype: torch.dtype | None = None
    ) -> DropoutState:
        d, t = param_like(self)
        ones = torch.ones(
            batch_size,
            self.output_size,
            device=device if device is not None else d,
            dtype=dtype or t,
        )
        if not self.training or self.p == 0.0:
            return DropoutState(ones)
        keep = 1.0 - self.p
        return DropoutState(torch.bernoulli(ones * keep) / keep)

    def forward(self, x: Tensor, state: DropoutState) -> tuple[Tensor, DropoutState]:
        if not self.training:
            return x, state
        return x * state.mask, state

    def extra_repr(self) -> str:
        return f"size={self.output_size}, p={self.p}"


def spiking_mlp(
    sizes: Sequence[int],
    *,
    recurrent: bool = False,
    tau_mem: float = 20.0,
    threshold: float = 1.0,
    surrogate: str | Surrogate = Triangle(),
    detach_reset: bool = True,
    bias: bool = False,
    weight_scale: float = 1.0,
    dropout: float = 0.0,
    kappa: float = 0.0,
) -> Stack:
    """A feed-forward spiking network ``sizes[0] → sizes[1] → ... → sizes[-1]``.

    Each hidden size gets one ``LIF(in, out, recurrent=recurrent)`` layer (a linear map into
    LIF neurons), optionally followed by :class:`SequenceDropout`; the last size is a
    :class:`~chronograd.cells.LeakyReadout` (``kappa=0``: a linear readout of the spikes).

    Args:
        sizes: ``(inputs, hidden..., outputs)``, at least one hidden layer.
        recurrent: give every LIF layer recurrent weights.
        tau_mem, threshold, surrogate, detach_reset, bias, weight_scale: passed to each LIF.
        dropout: ``p`` of a :class:`SequenceDropout` after each hidden layer (0: none).
        kappa: leak of the readout.

    Returns:
        ``Stack(LIF, [SequenceDropout], ..., LeakyReadout)``; e.g. ``spiking_mlp((784, 256,
        10))`` is ``Stack(LIF(784, 256, recurrent=False), LeakyReadout(256, 10))``.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 3:
        raise ValueError(
            f"sizes must be (inputs, hidden..., outputs) with at least one hidden layer, got "
            f"{tuple(sizes)}"
        )
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes[:-1]):
        layers.append(
            LIF(
                n_in,
                n_out,
                recurrent=recurrent,
                tau_mem=tau_mem,
                threshold=threshold,
                surrogate=surrogate,
                detach_reset=detach_reset,
                bias=bias,
                weight_scale=weight_scale,
            )
        )
        if dropout > 0.0:
            layers.append(SequenceDropout(n_out, dropout))
    layers.append(LeakyReadout(sizes[-2], sizes[-1], kappa=kappa))
    return Stack(*layers)
