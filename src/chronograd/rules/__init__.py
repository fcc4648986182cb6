"""Learning rules behind one interface (see :mod:`chronograd.rules.base`).

``get(name, **options)`` builds a rule from its name (used by the CLI); ``RULES`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chronograd.rules.base import (
    LearningRule,
    RuleStep,
    default_prepare_batch,
    grads_of,
    select_parameters,
)
from chronograd.rules.bptt import BPTT
from chronograd.rules.drtrl import DRTRL
from chronograd.rules.eprop import EProp
from chronograd.rules.fptt import FPTT, fptt_load_average
from chronograd.rules.ottt import OTTT
from chronograd.rules.pp_prop import ESDRTRL, PPProp
from chronograd.rules.rls import RLS
from chronograd.rules.rtrl import RTRL
from chronograd.rules.run import SequenceResult, apply_to_model, gradient, run_sequence
from chronograd.rules.sltt import SLTT
from chronograd.rules.tbptt import TBPTT

RULES: dict[str, Callable[..., LearningRule]] = {
    "bptt": BPTT,
    "tbptt": TBPTT,
    "ottt": OTTT,
    "sltt": SLTT,
    "fptt": FPTT,
    "rls": RLS,
    "rtrl": RTRL,
    "drtrl": DRTRL,
    "pp-prop": PPProp,
    "eprop": EProp,
}


def register(name: str, factory: Callable[..., LearningRule]) -> None:
    """Make a rule available to ``get`` and the CLI under ``name``."""
    if name in RULES and RULES[name] is not factory:
        raise ValueError(f"a rule named {name!r} is already registered")
    RULES[name] = factory


def chunk_option(name: str) -> str:
    """The option of rule ``name`` that sets its steps per update (``--chunk`` in the CLI)."""
    key = name.lower().replace("_", "-")
    if key not in RULES:
        raise ValueError(f"unknown rule {name!r}; available: {', '.join(sorted(RULES))}")
    option = getattr(RULES[key], "chunk_option", None)
    if option is None:
        raise ValueError(
            f"rule {name!r} has no steps-per-update option for --chunk; set its own options "
            "with --rule-opt KEY=VALUE"
        )
    return str(option)


def get(name: str, **options: Any) -> LearningRule:
    """Build the rule registered as ``name`` with ``options`` (unknown options raise)."""
    key = name.lower().replace("_", "-")
    if key not in RULES:
        raise ValueError(f"unknown rule {name!r}; available: {', '.join(sorted(RULES))}")
    return RULES[key](**options)


__all__ = [
    "BPTT",
    "DRTRL",
    "ESDRTRL",
    "FPTT",
    "OTTT",
    "RLS",
    "RTRL",
    "RULES",
    "SLTT",
    "TBPTT",
    "EProp",
    "LearningRule",
    "PPProp",
    "RuleStep",
    "SequenceResult",
    "apply_to_model",
    "chunk_option",
    "default_prepare_batch",
    "fptt_load_average",
    "get",
    "gradient",
    "grads_of",
    "register",
    "run_sequence",
    "select_parameters",
]
