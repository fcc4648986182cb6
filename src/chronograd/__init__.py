"""chronograd: train recurrent and spiking networks through time with any credit-assignment rule.

Quick start::

    import torch, chronograd as cg
    model = cg.cells.Stack(cg.cells.LIF(4, 32), cg.cells.LeakyReadout(32, 2, kappa=0.9))
    objective = cg.Objective("cross_entropy", last=10)
    grads = cg.gradient(cg.rules.BPTT(), model, xs, ys, objective)   # xs: (T, B, 4)
"""

from chronograd import cells, constraints, dale, regularizers, rules, tasks, testing, training
from chronograd._tree import detach
from chronograd.cells import Stack
from chronograd.objectives import Objective
from chronograd.rules import BPTT, TBPTT, LearningRule, gradient
from chronograd.sequence import Span, spans, unroll
from chronograd.training import run_sequence

__version__ = "0.1.0"

__all__ = [
    "BPTT",
    "TBPTT",
    "LearningRule",
    "Objective",
    "Span",
    "Stack",
    "__version__",
    "cells",
    "constraints",
    "dale",
    "detach",
    "gradient",
    "regularizers",
    "rules",
    "run_sequence",
    "spans",
    "tasks",
    "testing",
    "training",
    "unroll",
]
