"""The learning-rule interface: a rule is a value with an explicit carry (optax style).

A rule owns time within a chunk. The driver (:func:`chronograd.rules.driver.drive`) splits a
sequence into chunks of ``rule.chunk_length(T)`` steps (``chunk_size``: ``None`` = the whole
sequence, offline; ``k`` = truncated; ``1`` = online) and for each chunk calls::

    step = rule.update(model, Chunk(xs, targets, span), state, carry, objective)

which returns the chunk's gradient (or, for rules such as RLS, direct parameter updates), the
new model state and carry, the loss and the detached outputs. The driver hands gradients on;
it never applies them (:mod:`chronograd.training.apply` does). A rule whose carry outlives a
sequence (RLS's ``P``, e-prop's feedback) also implements :class:`PersistentCarry`; a rule
that reads the updated weights back (FPTT) implements :class:`AfterUpdate`.
"""

from __future__ import annotations

import abc
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch import Tensor, nn

from chronograd.cells.base import State
from chronograd.objectives import Objective
from chronograd.sequence import Span

Carry = Any
Grads = dict[str, Tensor]
Reduce = Callable[[Grads, int], Grads]
"""``reduce(grads, batch_size)``: how a gradient computed on this process's batch becomes the
gradient of the whole batch (identity in one process; an average across ranks when
data-parallel)."""


class Chunk(NamedTuple):
    """One window of a batch of sequences: ``xs`` ``(T_c, B, I)``, time-first ``targets``
    (``(T_c, B, ...)`` or a dict of them) and the ``span`` of the sequence they cover."""

    xs: Tensor
    targets: Any
    span: Span


class RuleStep(NamedTuple):
    """What :meth:`LearningRule.update` returns for one chunk.

    Attributes:
        grads: ``{param_name: gradient}`` for the trained parameters (zeros where none flows).
        state: the model state after the chunk (detached).
        carry: the rule's carry after the chunk.
        loss: detached scalar loss of the chunk (the minimised value).
        outputs: detached outputs of the chunk, ``(T_chunk, B, O)``.
        updates: direct additive parameter updates (rules without an optimizer, e.g. RLS),
            applied as ``p += u``.
    """

    grads: Grads
    state: State
    carry: Carry
    loss: Tensor
    outputs: Any
    updates: Grads | None = None


@dataclass(frozen=True)
class NonFinite:
    """What to do when an update's gradient (or direct update) holds NaN or inf.

    Args:
        policy: ``"raise"`` (a :class:`~chronograd.rules.driver.NonFiniteError` naming the
            parameters and steps), ``"skip"`` (drop the update, count it, zero the non-finite
            entries of carry and state) or ``"replace"`` (``torch.nan_to_num`` of gradient,
            carry and state with the values below, count it). Counts appear as ``nonfinite``
            in the trainer's history.
        nan, posinf, neginf: replacement values for ``"replace"`` (``None``: the dtype's
            largest finite value, as ``torch.nan_to_num``).
    """

    policy: Literal["raise", "skip", "replace"] = "raise"
    nan: float = 0.0
    posinf: float | None = None
    neginf: float | None = None

    def __post_init__(self) -> None:
        if self.policy not in ("raise", "skip", "replace"):
            raise ValueError(f"nonfinite must be 'raise', 'skip' or 'replace', got {self.policy!r}")

    def repair(self, t: Tensor) -> Tensor:
        """``t`` with its non-finite entries zeroed (skip) or replaced (replace)."""
        if not t.is_floating_point():
            return t
        if self.policy == "skip":
            return torch.where(torch.isfinite(t), t, torch.zeros_like(t))
        return torch.nan_to_num(t, nan=self.nan, posinf=self.posinf, neginf=self.neginf)


@dataclass(frozen=True, kw_only=True)
class LearningRule(abc.ABC):
    """Abstract base of every rule; concrete rules are frozen, final dataclasses.

    Args:
        params: names (or ``fnmatch`` patterns such as ``"layers.0.*"``) of the parameters to
            train; ``None`` trains every parameter with ``requires_grad``.
        nonfinite: a :class:`NonFinite` policy, or its policy name (``"raise"``, ``"skip"``,
            ``"replace"``).
    """

    needs_optimizer: ClassVar[bool] = True
    """False for rules that update weights themselves (``RuleStep.updates``): the trainer then
    builds no optimizer by default, and gradient transforms do not apply."""

    reducible_updates: ClassVar[bool] = False
    """True when the direct updates of data-parallel ranks may be averaged into the full-batch
    update (False: a distributed trainer refuses the rule)."""

    accumulate_refused: ClassVar[str | None] = None
    """Why the rule needs an update after every chunk (the driver then refuses
    ``accumulate=True``); ``None``: accumulating chunk gradients is allowed."""

    params: tuple[str, ...] | None = None
    nonfinite: NonFinite = NonFinite()

    def __post_init__(self) -> None:
        if self.params is not None:
            if isinstance(self.params, str) or not all(isinstance(p, str) for p in self.params):
                raise TypeError(
                    f"params must be a tuple of parameter names or patterns, got {self.params!r}"
                )
            object.__setattr__(self, "params", tuple(self.params))
        if isinstance(self.nonfinite, str):
            object.__setattr__(self, "nonfinite", NonFinite(self.nonfinite))  # type: ignore[arg-type]
        elif not isinstance(self.nonfinite, NonFinite):
            raise TypeError(
                f"nonfinite must be a NonFinite(...) or 'raise'/'skip'/'replace', got "
                f"{self.nonfinite!r}"
            )
        self._check()

    def _check(self) -> None:
        """Rule-specific validation of the options (concrete rules override it)."""

    @property
    @abc.abstractmethod
    def chunk_size(self) -> int | None:
        """Steps per update: ``None`` (whole sequence), ``k`` (truncated), ``1`` (online)."""

    def chunk_length(self, total: int) -> int | None:
        """The chunk size for a sequence of ``total`` steps (rules with automatic sizes)."""
        return self.chunk_size

    @abc.abstractmethod
    def init(self, model: nn.Module, state: State) -> Carry:
        """The carry at the start of a sequence (and of :func:`~chronograd.rules.gradient`)."""

    @abc.abstractmethod
    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        """Process one chunk (``chunk.xs``: ``(T_c, B, I)``) from ``state`` and ``carry``."""

    def check_model(self, model: nn.Module) -> None:
        """Raise ``TypeError`` naming the reason and the fix when this rule cannot train ``model``.

        Default: every cell is supported. Rules that need structure override this and call it
        from ``init``; ``chronograd compare`` uses it to skip, with the reason, rules that do
        not apply.
        """

    def trained(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The parameters this rule trains, by name."""
        return select_parameters(model, self.params)


class PersistentCarry(abc.ABC):
    """Implemented by rules whose carry (or part of it) outlives a sequence.

    The driver calls :meth:`start_sequence` instead of a fresh ``init`` when a carry is handed
    on; trainer checkpoints save :meth:`carry_state_dict` and restore it with
    :meth:`load_carry_state_dict`.
    """

    @abc.abstractmethod
    def start_sequence(self, model: nn.Module, state: State, carry: Carry) -> Carry:
        """The carry for a new sequence, keeping the persistent parts of ``carry``."""

    def carry_state_dict(self, carry: Carry) -> dict[str, Any] | None:
        """The persistent parts of ``carry``, ``torch.load(weights_only=True)``-loadable;
        ``None``: nothing to checkpoint (what persists is a cache the rule rebuilds)."""
        return None

    def load_carry_state_dict(self, model: nn.Module, state: dict[str, Any]) -> Carry:
        """Inverse of :meth:`carry_state_dict`."""
        raise NotImplementedError(f"{type(self).__name__} has no persistent carry to load")

    def checkpointed(
        self, part: Literal["carry", "optimizer"], action: Literal["save", "load"]
    ) -> bool:
        """Whether checkpoints ``save``/``load`` the carry or the optimizer state (default:
        always; e-prop has switches for both)."""
        return True


class AfterUpdate(abc.ABC):
    """Implemented by rules that refresh their carry from the weights after each update."""

    @abc.abstractmethod
    def after_update(self, model: nn.Module, carry: Carry, reduce: Reduce) -> Carry:
        """The carry once an update was applied to ``model`` (``reduce``: see :data:`Reduce`)."""


def check_chunk_size(value: Any) -> None:
    """``chunk_size`` is ``None`` or a positive int (steps per update)."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"chunk_size must be a positive int (steps per update), got {value!r}")


def select_parameters(
    model: nn.Module, patterns: tuple[str, ...] | None
) -> dict[str, nn.Parameter]:
    """``{name: param}`` of ``model`` matching ``patterns`` (``None``: all trainable)."""
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if patterns is None:
        return named
    chosen: dict[str, nn.Parameter] = {}
    for pat in patterns:
        hits = [n for n in named if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise ValueError(
                f"params pattern {pat!r} matches no trainable parameter; the model has "
                f"{sorted(named)}"
            )
        for n in hits:
            chosen[n] = named[n]
    return chosen


def grads_of(loss: Tensor, params: dict[str, Tensor], objective: Objective | None = None) -> Grads:
    """``∂(loss + penalty)/∂θ`` for each named parameter (zeros where no gradient flows)."""
    total = loss
    if objective is not None:
        pen = objective.penalty()
        if pen is not None:
            total = total + pen
    names = list(params)
    if not total.requires_grad:
        return {n: torch.zeros_like(params[n]) for n in names}
    gs = torch.autograd.grad(total, [params[n] for n in names], allow_unused=True)
    return {n: torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, gs)}


def penalty_grads(objective: Objective, params: dict[str, Tensor]) -> Grads | None:
    """Gradient of the objective's regularizers alone (for rules that build grads by hand)."""
    pen = objective.penalty()
    if pen is None or not pen.requires_grad:
        return None
    names = list(params)
    gs = torch.autograd.grad(pen, [params[n] for n in names], allow_unused=True)
    return {n: g for n, g in zip(names, gs) if g is not None}


def add_grads(a: Grads | None, b: Grads | None) -> Grads | None:
    """Sum two gradient dicts (missing keys count as zero)."""
    if a is None:
        return None if b is None else dict(b)
    if b is None:
        return a
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k] + v if k in out else v
    return out
