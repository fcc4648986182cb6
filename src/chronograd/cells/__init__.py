"""Cells: one time step with explicit state (see :mod:`chronograd.cells.base`)."""

from chronograd.cells.base import (
    Cell,
    EmptyState,
    HoistedCell,
    Map,
    State,
    check_cell,
    is_cell,
)
from chronograd.cells.chaotic import ChaoticRNN, ChaoticState
from chronograd.cells.diagonal import DiagonalRNN
from chronograd.cells.feedforward import DropoutState, SequenceDropout, spiking_mlp
from chronograd.cells.lif import ALIF, LIF, ALIFState, LIFState, lsnn_beta
from chronograd.cells.readout import LeakyReadout, ReadoutState
from chronograd.cells.rnn import GRU, LeakyRNN, RNNState
from chronograd.cells.stack import Stack
from chronograd.cells.surrogate import FastSigmoid, Sigmoid, Surrogate, Triangle, get_surrogate
from chronograd.cells.synaptic import SynapticLIF, SynapticLIFState
from chronograd.cells.wilson_cowan import WCState, WilsonCowan, dale_signs

__all__ = [
    "ALIF",
    "GRU",
    "LIF",
    "ALIFState",
    "Cell",
    "ChaoticRNN",
    "ChaoticState",
    "DiagonalRNN",
    "DropoutState",
    "EmptyState",
    "FastSigmoid",
    "HoistedCell",
    "LIFState",
    "LeakyRNN",
    "LeakyReadout",
    "Map",
    "RNNState",
    "ReadoutState",
    "SequenceDropout",
    "Sigmoid",
    "Stack",
    "State",
    "Surrogate",
    "SynapticLIF",
    "SynapticLIFState",
    "Triangle",
    "WCState",
    "WilsonCowan",
    "check_cell",
    "dale_signs",
    "get_surrogate",
    "is_cell",
    "lsnn_beta",
    "spiking_mlp",
]
