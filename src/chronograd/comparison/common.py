"""What ``chronograd compare`` and ``chronograd bench`` share: rules by name, models, JSON.

Rules are found in the registry (:data:`chronograd.rules.RULES`), built with
:func:`chronograd.rules.get` from the options in :data:`RULE_DEFAULTS` (the one place where a
rule name gets default options for a comparison) updated with the user's options, and checked
against the model with :meth:`~chronograd.rules.LearningRule.check_model`. Whatever goes wrong
on the way is a *reason* to skip the rule, reported to the user, never a crash:

* the name is not registered: "not available in this installation";
* building it raises ``TypeError``/``ValueError`` (an unknown or invalid option);
* ``check_model`` raises ``TypeError`` (the rule does not apply to this model);
* its first use raises ``TypeError``/``ValueError`` (found by the caller).
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from chronograd import rules as rules_mod
from chronograd import tasks as tasks_mod
from chronograd.models import build_model
from chronograd.rules.base import LearningRule
from chronograd.tasks.base import Task

#: Default options of a rule in a comparison, as a function of the sequence length ``T``.
#: Extend with one line per rule (e.g. ``"sltt": lambda T: {"k": max(1, T // 10)}``); user
#: options (``--rule-opt RULE.KEY=VALUE``) override these.
RULE_DEFAULTS: dict[str, Callable[[int], dict[str, Any]]] = {
    "tbptt": lambda T: {"chunk_size": max(1, math.ceil(T / 10))},
    # FORCE ("inputs") trains only a readout; the P-preconditioned gradient trains every layer
    "rls": lambda T: {"strategy": "grad"},
}


NOT_INSTALLED = "not available in this installation"


@dataclass(frozen=True)
class Candidate:
    """A requested rule: built and applicable (``rule`` set) or skipped (``reason`` set).

    Attributes:
        name: the registry name as requested.
        options: the options it was (or would have been) built with.
        rule: the built rule, or None when skipped.
        reason: why it was skipped, or None.
    """

    name: str
    options: dict[str, Any]
    rule: LearningRule | None = None
    reason: str | None = None


def split_names(text: str | Sequence[str]) -> list[str]:
    """``"bptt, tbptt"`` -> ``["bptt", "tbptt"]`` (duplicates removed, order kept)."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = [p.strip().lower().replace("_", "-") for p in parts if p.strip()]
    if not names:
        raise ValueError("no rule names given; pass e.g. --rules bptt,tbptt")
    return list(dict.fromkeys(names))


def split_ints(text: str | Sequence[int], name: str) -> list[int]:
    """``"64,256"`` -> ``[64, 256]``, each a positive int."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    out: list[int] = []
    for p in parts:
        try:
            v = int(p)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name} must be comma-separated positive ints, got {text!r}"
            ) from None
        if v < 1:
            raise ValueError(f"{name} must be positive, got {v}")
        out.append(v)
    if not out:
        raise ValueError(f"{name} is empty")
    return sorted(set(out))


def rule_options(pairs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"tbptt.chunk_size": 50}`` -> ``{"tbptt": {"chunk_size": 50}}`` (options addressed to one rule)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in pairs.items():
        rule, dot, opt = key.partition(".")
        if not dot or not rule or not opt:
            raise ValueError(
                f"rule option {key!r} must name its rule: RULE.KEY=VALUE, e.g. tbptt.chunk_size=50"
            )
        out.setdefault(rule.lower().replace("_", "-"), {})[opt] = value
    return out


def options_for(name: str, steps: int, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """:data:`RULE_DEFAULTS` for ``name`` at ``T = steps``, updated with ``options``."""
    defaults = RULE_DEFAULTS[name](steps) if name in RULE_DEFAULTS else {}
    return {**defaults, **dict(options or {})}


def candidate(
    name: str, steps: int, options: Mapping[str, Any] | None, model: nn.Module
) -> Candidate:
    """Build rule ``name`` for sequences of ``steps`` and check that it can train ``model``."""
    opts = options_for(name, steps, options)
    if name not in rules_mod.RULES:
        return Candidate(
            name, opts, reason=f"{NOT_INSTALLED} (registered: {', '.join(sorted(rules_mod.RULES))})",
        )  # fmt: skip
    try:
        rule = rules_mod.get(name, **opts)
    except (TypeError, ValueError) as e:
        return Candidate(name, opts, reason=f"cannot be built with options {opts}: {e}")
    try:
        rule.check_model(model)
    except TypeError as e:
        return Candidate(name, opts, reason=f"does not apply to this model: {e}")
    return Candidate(name, opts, rule=rule)


def build_rule(name: str, steps: int, options: Mapping[str, Any] | None) -> LearningRule:
    """The rule ``name`` with the comparison defaults and ``options`` (raises when it cannot)."""
    return rules_mod.get(name, **options_for(name, steps, options))


def make_task(
    name: str,
    *,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    batches: int | None = None,
) -> Task:
    """``tasks.get(name, seed=seed, **options)`` with the data volume overridden."""
    task = tasks_mod.get(name, seed=seed, **dict(options or {}))
    if batch_size is not None:
        task = replace(task, batch_size=batch_size)
    if batches is not None:
        task = replace(task, batches_per_epoch=batches)
    return task


def model_hints(task: Task) -> dict[str, Any]:
    """The task's model-building hints without ``cell``, ``hidden`` and ``lr``."""
    return {k: v for k, v in task.suggested.items() if k not in ("cell", "hidden", "lr")}


def model_for_task(task: Task, cell: str | None, hidden: int | None, seed: int) -> nn.Module:
    """The model ``chronograd train`` builds for ``task`` (seeded: same weights for a seed)."""
    torch.manual_seed(seed)
    return build_model(
        cell or task.suggested.get("cell", "gru"),
        task.input_size,
        task.output_size,
        hidden if hidden is not None else task.suggested.get("hidden", 64),
        **model_hints(task),
    )


def json_safe(obj: Any) -> Any:
    """Numbers that JSON cannot hold (NaN, inf) become ``None``; tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def machine(device: torch.device | str) -> dict[str, Any]:
    """Where the figures were measured."""
    dev = torch.device(device)
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
    }


def fmt(v: Any, spec: str = ".3f") -> str:
    """A table cell: ``-`` for missing or non-finite values."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)
