"""Relation discovery and Jacobians for the eligibility-trace rules.

* :mod:`~chronograd.traces.intercept`: see the linear calls ("relations") inside a step.
* :mod:`~chronograd.traces.groups`: which state tensors form the neurons (hidden groups).
* :mod:`~chronograd.traces.compile`: :func:`compile_graph` probes a model and checks it fits.
* :mod:`~chronograd.traces.graph`: :class:`TraceGraph` gives per step ``D``, ``Df`` and ``δ``.
"""

from chronograd.traces.compile import compile_graph
from chronograd.traces.graph import (
    Chunk,
    NeuronParam,
    Relation,
    TraceGraph,
    TraceStep,
    group_signal,
    relation_grads,
)
from chronograd.traces.groups import HiddenGroup, hidden_groups
from chronograd.traces.intercept import (
    LinearCall,
    find_relations,
    intercept_linears,
    relation_output,
)

__all__ = [
    "Chunk",
    "HiddenGroup",
    "LinearCall",
    "NeuronParam",
    "Relation",
    "TraceGraph",
    "TraceStep",
    "compile_graph",
    "find_relations",
    "group_signal",
    "hidden_groups",
    "intercept_linears",
    "relation_grads",
    "relation_output",
]
