"""The learning-rule interface: a rule is a value with an explicit carry (optax style).

A rule owns time within a chunk. The driver (:func:`run_sequence`) splits a sequence into
chunks of ``rule.chunk_length(T)`` steps (``None``: the whole sequence, offline; ``k``:
truncated; ``1``: online) and for each chunk calls::

    step = rule.update(model, xs_chunk, targets_chunk, state, carry, objective, span)

which returns the chunk's gradient (or, for rules such as RLS, direct parameter updates), the
new model state and carry, the loss and the detached outputs. Gradients are then applied
(one optimizer step per chunk, or summed over the sequence with ``accumulate=True``) and
``rule.after_update`` may refresh the carry from the updated parameters (FPTT needs this).

The options every rule shares live on :class:`LearningRule`: which parameters it trains,
gradient-norm clipping, accumulation across chunks, an exponential moving average of the
applied gradients, the data's time dimension, and the batch preparation step.
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


class RuleStep(NamedTuple):
    """What :meth:`LearningRule.update` returns for one chunk.

    Attributes:
        grads: ``{param_name: gradient}`` for the trained parameters (zeros where none flows).
        state: the model state after the chunk (detached).
        carry: the rule's carry after the chunk.
        loss: detached scalar loss of the chunk (the minimised value).
        outputs: detached outputs of the chunk, ``(T_chunk, B, O)``.
        updates: direct additive parameter updates (rules without an optimizer, e.g. RLS);
            applied as ``p += u`` by the driver.
    """

    grads: Grads
    state: State
    carry: Carry
    loss: Tensor
    outputs: Any
    updates: Grads | None = None


def default_prepare_batch(
    batch: Any, device: torch.device | str | None = None, non_blocking: bool = False
) -> tuple[Any, Any]:
    """Split a batch ``(x, y)`` and move it to ``device``."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            f"a batch must be a pair (inputs, targets), got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    from chronograd._tree import tree_map

    x, y = batch
    if device is None:
        return x, y
    return (
        tree_map(lambda t: t.to(device, non_blocking=non_blocking), x),
        tree_map(lambda t: t.to(device, non_blocking=non_blocking), y),
    )


@dataclass(frozen=True, kw_only=True)
class LearningRule(abc.ABC):
    """Abstract base of every rule; concrete rules are frozen, final dataclasses.

    Args:
        params: names (or ``fnmatch`` patterns such as ``"layers.0.*"``) of the parameters to
            train; ``None`` trains every parameter with ``requires_grad``.
        clip_grad_norm: clip the global norm of each applied gradient to this value.
        accumulate: sum the chunk gradients over the sequence and apply them once at its end
            (default: one update per chunk).
        grad_ema: if set to ``β ∈ [0, 1)``, the applied gradient is the bias-corrected moving
            average ``ḡ ← β ḡ + (1-β) g`` of the update gradients within a sequence.
        time_dim: time dimension of the batches handed to the trainer (moved to 0).
        prepare_batch: ``(batch, device, non_blocking) -> (x, y)``; default splits a pair.
        non_blocking: passed to ``prepare_batch`` for asynchronous host-to-device copies.
        nonfinite: what to do when an update's gradient (or direct update) holds NaN or inf:
            ``"raise"`` (default: a :class:`~chronograd.rules.run.NonFiniteError` naming the
            parameters and steps), ``"skip"`` (drop the update, count it, zero the non-finite
            entries of the carry and state so they do not poison later steps) or ``"replace"``
            (``torch.nan_to_num`` with ``nan``/``posinf``/``neginf`` on the gradient, carry
            and state, count it). Counts appear as ``nonfinite`` in the trainer's history.
        nan, posinf, neginf: replacement values for ``"replace"`` (``None``: the dtype's
            largest finite value, as ``torch.nan_to_num``).
    """

    needs_optimizer: ClassVar[bool] = True
    """False for rules that update weights themselves (``RuleStep.updates``, e.g. RLS): the
    trainer then builds no optimizer by default."""

    chunk_option: ClassVar[str | None] = None
    """The name of the option that sets the steps per update (``k1`` for TBPTT), if any: the
    CLI's ``--chunk K`` sets it."""

    params: tuple[str, ...] | None = None
    clip_grad_norm: float | None = None
    accumulate: bool = False
    grad_ema: float | None = None
    time_dim: int = 0
    prepare_batch: Callable[..., tuple[Any, Any]] = default_prepare_batch
    non_blocking: bool = False
    nonfinite: Literal["raise", "skip", "replace"] = "raise"
    nan: float = 0.0
    posinf: float | None = None
    neginf: float | None = None

    def __post_init__(self) -> None:
        if self.params is not None:
            if isinstance(self.params, str) or not all(isinstance(p, str) for p in self.params):
                raise TypeError(
                    f"params must be a tuple of parameter names or patterns, got {self.params!r}"
                )
            object.__setattr__(self, "params", tuple(self.params))
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0, got {self.clip_grad_norm}")
        if self.grad_ema is not None and not 0.0 <= self.grad_ema < 1.0:
            raise ValueError(f"grad_ema must lie in [0, 1), got {self.grad_ema}")
        if not isinstance(self.time_dim, int) or self.time_dim < 0:
            raise ValueError(f"time_dim must be a non-negative int, got {self.time_dim!r}")
        if self.nonfinite not in ("raise", "skip", "replace"):
            raise ValueError(
                f"nonfinite must be 'raise', 'skip' or 'replace', got {self.nonfinite!r}"
            )
        if not callable(self.prepare_batch):
            raise TypeError(
                "prepare_batch must be callable (batch, device, non_blocking) -> (x, y)"
            )
        self._check()

    def _check(self) -> None:
        """Rule-specific validation (override in concrete rules)."""

    # -- the protocol ---------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def chunk_size(self) -> int | None:
        """Steps per update: ``None`` (whole sequence), ``k`` (truncated), ``1`` (online)."""

    def chunk_length(self, total: int) -> int | None:
        """The chunk size for a sequence of ``total`` steps (rules with automatic sizes)."""
        return self.chunk_size

    @abc.abstractmethod
    def init(self, model: nn.Module, state: State) -> Carry:
        """The carry at the start of training (and of :func:`gradient`)."""

    def start_sequence(self, model: nn.Module, state: State, carry: Carry) -> Carry:
        """The carry at the start of a new sequence; by default a fresh :meth:`init`.

        Rules with parts that persist across sequences (RLS's ``P``, e-prop's random feedback)
        override this to keep them.
        """
        return self.init(model, state)

    @abc.abstractmethod
    def update(
        self,
        model: nn.Module,
        xs: Tensor,
        targets: Any,
        state: State,
        carry: Carry,
        objective: Objective,
        span: Span,
    ) -> RuleStep:
        """Process one chunk ``xs`` (``(T_chunk, B, I)``) covering ``span`` of the sequence."""

    def check_model(self, model: nn.Module) -> None:
        """Raise ``TypeError`` naming the reason and the fix when this rule cannot train ``model``.

        Default: every cell is supported. Rules that need structure (relations, spiking layers,
        a linear readout) override this and also call it from ``init``; ``chronograd compare``
        uses it to skip, with the reason, rules that do not apply.
        """

    def after_update(self, model: nn.Module, carry: Carry) -> Carry:
        """Called after the driver applied an update; default: carry unchanged."""
        return carry

    def carry_state_dict(self, carry: Carry) -> dict[str, Any] | None:
        """The parts of the carry that persist across sequences, for checkpoints.

        Default: nothing persists (the carry is rebuilt at each sequence). The result must be
        ``torch.load(weights_only=True)``-loadable: tensors, numbers, strings, plain containers.
        """
        return None

    def load_carry_state_dict(self, model: nn.Module, state: dict[str, Any]) -> Carry:
        """Inverse of :meth:`carry_state_dict`."""
        raise NotImplementedError(f"{type(self).__name__} has no persistent carry to load")

    def checkpointed(
        self, part: Literal["carry", "optimizer"], action: Literal["save", "load"]
    ) -> bool:
        """Whether trainer checkpoints ``save``/``load`` the rule's persistent carry or the
        optimizer state (default: always; e-prop has switches for both)."""
        return True

    # -- helpers shared by rules ----------------------------------------------------------------
    def trained(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The parameters this rule trains, by name."""
        return select_parameters(model, self.params)


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
