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
from chronograd.cells.diagonal import DiagonalRNN
from chronograd.cells.lif import ALIF, LIF, ALIFState, LIFState, lsnn_beta
from chronograd.cells.readout import LeakyReadout, ReadoutState
from chronograd.cells.rnn import GRU, LeakyRNN, RNNState
from chronograd.cells.stack import Stack
from chronograd.cells.surrogate import FastSigmoid, Sigmoid, Surrogate, Triangle, get_surrogate
from chronograd.cells.synaptic import SynapticLIF, SynapticLIFState

__all__ = [
    "ALIF",
    "GRU",
    "LIF",
    "ALIFState",
    "Cell",
    "DiagonalRNN",
    "EmptyState",
    "FastSigmoid",
    "HoistedCell",
    "LIFState",
    "LeakyRNN",
    "LeakyReadout",
    "Map",
    "RNNState",
    "ReadoutState",
    "Sigmoid",
    "Stack",
    "State",
    "Surrogate",
    "SynapticLIF",
    "SynapticLIFState",
    "Triangle",
    "check_cell",
    "get_surrogate",
    "is_cell",
    "lsnn_beta",
]
