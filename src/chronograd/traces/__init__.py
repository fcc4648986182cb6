"""Relation discovery and Jacobians for the eligibility-trace rules.

* :mod:`~chronograd.traces.intercept`: see the linear calls ("relations") inside a step.
* :mod:`~chronograd.traces.groups`: which state tensors form the neurons (hidden groups).
* :mod:`~chronograd.traces.compile`: :func:`compile_graph` probes a model and checks it fits.
* :mod:`~chronograd.traces.graph`: :class:`TraceGraph` runs blocks of steps and returns
  ``D``, ``Df`` (:mod:`~chronograd.traces.jacobians`) and ``δ``
  (:mod:`~chronograd.traces.signal`); :mod:`~chronograd.traces.analytic` has closed forms
  for the shipped cells (and the one LIF/ALIF Jacobian).
* :mod:`~chronograd.traces.chunk`: the trace rules' chunk loop and carry;
  :mod:`~chronograd.traces.recursion`: the per-neuron trace recursions over a block;
  :mod:`~chronograd.traces.readout_filter`: D-RTRL's ``readout="filter"``.
* :mod:`~chronograd.traces.eprop_network`, :mod:`~chronograd.traces.eprop_evaluation`,
  :mod:`~chronograd.traces.feedback`: e-prop's LIF/ALIF network, its two evaluations and its
  feedback matrices.
* :mod:`~chronograd.traces.instantaneous`: OTTT's and SLTT's per-step spatial backprop loop.
* :mod:`~chronograd.traces.spiking_online`: the layered LIF network of OSTL, OTPE and OSTTP
  (one step at a time, the same-step spatial signal, per-neuron traces).
* :mod:`~chronograd.traces.learning_signal`: the trace rules' learning signal: the error
  through feedback, or a neuromodulator ``M_t`` (three-factor and reward-based e-prop).
"""

from chronograd.traces.analytic import analytic_jacobians
from chronograd.traces.compile import compile_graph
from chronograd.traces.graph import TraceGraph
from chronograd.traces.groups import HiddenGroup, hidden_groups
from chronograd.traces.intercept import (
    LinearCall,
    find_relations,
    intercept_linears,
    relation_output,
)
from chronograd.traces.signal import group_signal
from chronograd.traces.structure import (
    Chunk,
    NeuronParam,
    Relation,
    TraceBlock,
    TraceStep,
    relation_grads,
)

__all__ = [
    "Chunk",
    "HiddenGroup",
    "LinearCall",
    "NeuronParam",
    "Relation",
    "TraceBlock",
    "TraceGraph",
    "TraceStep",
    "analytic_jacobians",
    "compile_graph",
    "find_relations",
    "group_signal",
    "hidden_groups",
    "intercept_linears",
    "relation_grads",
    "relation_output",
]
