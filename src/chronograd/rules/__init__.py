"""Learning rules behind one interface (see :mod:`chronograd.rules.base`).

One file per rule, each opening with its equations; :mod:`~chronograd.rules.driver` runs a rule
over a sequence. ``get(name, **options)`` builds a rule from its name (used by the CLI; every
rule's steps per update is its ``chunk_size`` option); ``RULES`` lists them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from chronograd.rules.base import (
    AfterUpdate,
    Chunk,
    LearningRule,
    NonFinite,
    PersistentCarry,
    RuleStep,
    grads_of,
    select_parameters,
)
from chronograd.rules.bptt import BPTT
from chronograd.rules.driver import NonFiniteError, SequenceResult, Update, drive, gradient
from chronograd.rules.drtrl import DRTRL
from chronograd.rules.eprop import EProp
from chronograd.rules.fptt import FPTT, fptt_load_average
from chronograd.rules.kf_rtrl import KFRTRL
from chronograd.rules.ostl import OSTL
from chronograd.rules.osttp import OSTTP
from chronograd.rules.otpe import OTPE
from chronograd.rules.ottt import OTTT
from chronograd.rules.pp_prop import ESDRTRL, PPProp
from chronograd.rules.rls import RLS
from chronograd.rules.rtrl import RTRL
from chronograd.rules.sltt import SLTT
from chronograd.rules.snap import SnAp
from chronograd.rules.tbptt import TBPTT
from chronograd.rules.uoro import UORO

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
    "uoro": UORO,
    "snap": SnAp,
    "kf-rtrl": KFRTRL,
    "ostl": OSTL,
    "otpe": OTPE,
    "osttp": OSTTP,
}


def register(name: str, factory: Callable[..., LearningRule]) -> None:
    """Make a rule available to ``get`` and the CLI under ``name``."""
    if name in RULES and RULES[name] is not factory:
        raise ValueError(f"a rule named {name!r} is already registered")
    RULES[name] = factory


def _factory(name: str) -> Callable[..., LearningRule]:
    key = name.lower().replace("_", "-")
    if key not in RULES:
        raise ValueError(f"unknown rule {name!r}; available: {', '.join(sorted(RULES))}")
    return RULES[key]


def options(name: str) -> list[str]:
    """The option names of the rule registered as ``name`` (its dataclass fields)."""
    factory = _factory(name)
    if not dataclasses.is_dataclass(factory):
        raise TypeError(f"rule {name!r} is not a dataclass; its options cannot be listed")
    return [f.name for f in dataclasses.fields(factory) if f.init]


def get(name: str, **options: Any) -> LearningRule:
    """Build the rule registered as ``name`` with ``options`` (unknown options raise)."""
    return _factory(name)(**options)


__all__ = [
    "BPTT",
    "DRTRL",
    "ESDRTRL",
    "FPTT",
    "KFRTRL",
    "OSTL",
    "OSTTP",
    "OTPE",
    "OTTT",
    "RLS",
    "RTRL",
    "RULES",
    "SLTT",
    "TBPTT",
    "UORO",
    "AfterUpdate",
    "Chunk",
    "EProp",
    "LearningRule",
    "NonFinite",
    "NonFiniteError",
    "PPProp",
    "PersistentCarry",
    "RuleStep",
    "SequenceResult",
    "SnAp",
    "Update",
    "drive",
    "fptt_load_average",
    "get",
    "gradient",
    "grads_of",
    "options",
    "register",
    "select_parameters",
]
