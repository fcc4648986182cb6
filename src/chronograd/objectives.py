"""Objectives: a per-step loss with an optional time mask and a stated reduction.

For outputs ``o_t`` and targets ``y*_t`` of a sequence of ``T`` steps and ``B`` samples::

    L = Σ_t Σ_b w_{t,b} ℓ(o_{t,b}, y*_{t,b})        w_{t,b} = s · m_{t,b} / N

with ``m`` the time mask (1 everywhere by default; ``last=n`` keeps the last ``n`` steps),
``N = Σ m`` over the evaluated window for ``reduction="mean"`` and ``N = 1`` for ``"sum"``,
and ``s = -1`` when ``maximize=True`` (the rules always minimise ``L``). ``ℓ`` is reduced over
feature dimensions by a mean (MSE) or is per sample (cross-entropy).

A *window* is the range of steps one gradient covers: the whole sequence for BPTT, one chunk
for truncated and online rules. :meth:`Objective.weights` gives ``w`` for any window, so an
online rule that processes one step at a time adds exactly the terms BPTT would.

Several named outputs: pass ``criterion`` as a dict ``{name: criterion}``; the model returns
a dict of outputs and the targets are a dict with the same keys. Each term may be weighted.

Regularizers (:mod:`chronograd.regularizers`) are callables ``reg() -> scalar tensor`` of parameters;
``penalty()`` sums them and every rule adds its gradient once per update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Criterion = Callable[[Tensor, Tensor], Tensor]


def mse(outputs: Tensor, targets: Tensor) -> Tensor:
    """Squared error averaged over feature dims: ``(T, B, ...) -> (T, B)``."""
    if outputs.shape != targets.shape:
        raise ValueError(
            f"mse: outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} must have "
            "the same shape"
        )
    if targets.dtype == torch.bool:
        raise TypeError("mse: targets must be numbers, got dtype torch.bool; pass y.float()")
    d = (outputs - targets) ** 2
    return d.flatten(2).mean(-1) if d.dim() > 2 else d


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Softmax cross-entropy per step and sample: logits ``(T, B, C)`` -> ``(T, B)``.

    ``targets`` are class indices ``(T, B)`` (integer) or probabilities ``(T, B, C)`` (float).
    """
    if outputs.dim() != 3:
        raise ValueError(f"cross_entropy: logits must be (T, B, C), got {tuple(outputs.shape)}")
    T, B, C = outputs.shape
    if targets.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        if targets.shape != (T, B):
            raise ValueError(
                f"cross_entropy: class targets must be (T, B) = ({T}, {B}), got "
                f"{tuple(targets.shape)}; repeat a per-sequence label over time with "
                "y.expand(T, B)"
            )
        return F.cross_entropy(
            outputs.reshape(T * B, C), targets.reshape(T * B).long(), reduction="none"
        ).view(T, B)
    if targets.shape != outputs.shape:
        raise ValueError(
            f"cross_entropy: probability targets must match the logits' shape {tuple(outputs.shape)}, "
            f"got {tuple(targets.shape)}"
        )
    return -(targets * F.log_softmax(outputs, dim=-1)).sum(-1)


def binary_cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Sigmoid cross-entropy on logits, averaged over feature dims: ``(T, B, ...) -> (T, B)``."""
    d = F.binary_cross_entropy_with_logits(outputs, targets.to(outputs.dtype), reduction="none")
    return d.flatten(2).mean(-1) if d.dim() > 2 else d


CRITERIA: dict[str, Criterion] = {
    "mse": mse,
    "cross_entropy": cross_entropy,
    "bce": binary_cross_entropy,
}


def _criterion(spec: str | Criterion) -> Criterion:
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec in CRITERIA:
        return CRITERIA[spec]
    raise ValueError(
        f"unknown criterion {spec!r}; expected one of {sorted(CRITERIA)} or a callable"
    )


@dataclass(frozen=True, eq=False)
class Objective:
    """What a rule minimises (see the module docstring for the exact formula).

    Args:
        criterion: ``"mse"``, ``"cross_entropy"``, ``"bce"``, a callable
            ``(outputs (T,B,...), targets) -> per-step per-sample losses (T, B)`` (unreduced!),
            or a dict ``{output_name: criterion}`` for models with several named outputs.
        mask: time mask ``(T,)`` or ``(T, B)`` of 0/1 (or non-negative weights); or a callable
            ``T -> mask``. Combined (multiplied) with ``last``.
        last: count only the last ``n`` steps of each sequence (e.g. a recall window).
        reduction: ``"mean"`` over counted (step, sample) pairs, or ``"sum"``.
        maximize: the objective is to be raised; rules minimise ``-L``.
        output_weights: per-output weights for dict criteria (default 1 each).
        regularizers: callables ``() -> scalar`` added to the loss by every rule (per update).
    """

    criterion: str | Criterion | Mapping[str, str | Criterion] = "mse"
    mask: Tensor | Callable[[int], Tensor] | None = None
    last: int | None = None
    reduction: Literal["mean", "sum"] = "mean"
    maximize: bool = False
    output_weights: Mapping[str, float] | None = None
    regularizers: Sequence[Callable[[], Tensor]] = field(default_factory=tuple)
    _mask_cache: dict[int, Tensor] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {self.reduction!r}")
        if self.last is not None and (not isinstance(self.last, int) or self.last < 1):
            raise ValueError(
                f"last must be a positive int (number of final steps), got {self.last!r}"
            )
        if isinstance(self.criterion, Mapping):
            if not self.criterion:
                raise ValueError("criterion dict is empty")
            for v in self.criterion.values():
                _criterion(v)
            if self.output_weights is not None and set(self.output_weights) - set(self.criterion):
                raise ValueError(
                    f"output_weights has keys {sorted(set(self.output_weights) - set(self.criterion))} that "
                    "are not criterion outputs"
                )
        else:
            _criterion(self.criterion)
        for r in self.regularizers:
            if not callable(r):
                raise TypeError(
                    f"regularizers must be callables () -> scalar, got {type(r).__name__}"
                )

    # -- per-(step, sample) losses ------------------------------------------------------------
    def per_sample(self, outputs: Any, targets: Any) -> Tensor:
        """Unweighted losses ``ℓ_{t,b}``, shape ``(T, B)`` (summed over named outputs)."""
        if isinstance(self.criterion, Mapping):
            if not isinstance(outputs, Mapping) or not isinstance(targets, Mapping):
                raise TypeError(
                    "this objective has one criterion per named output: the model must return a "
                    "dict of outputs and the targets must be a dict with the same keys"
                )
            total: Tensor | None = None
            for name, spec in self.criterion.items():
                if name not in outputs or name not in targets:
                    raise ValueError(
                        f"output {name!r} is missing: outputs have {sorted(outputs)}, targets "
                        f"have {sorted(targets)}"
                    )
                term = self._term(_criterion(spec), outputs[name], targets[name])
                w = (
                    1.0
                    if self.output_weights is None
                    else float(self.output_weights.get(name, 1.0))
                )
                total = w * term if total is None else total + w * term
            assert total is not None
            return total
        if isinstance(outputs, Mapping):
            raise TypeError(
                "the model returns a dict of outputs; give the objective a dict of criteria "
                "{output_name: criterion}"
            )
        return self._term(_criterion(self.criterion), outputs, targets)

    @staticmethod
    def _term(fn: Criterion, outputs: Tensor, targets: Tensor) -> Tensor:
        if outputs.shape[:2] != targets.shape[:2]:
            raise ValueError(
                f"outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} must share "
                "their first two dims (T, B): targets are time-first like the inputs, and a "
                "per-sequence label is repeated over time with y.expand(T, B)"
            )
        losses = fn(outputs, targets)
        if losses.dim() < 2 or losses.shape[:2] != outputs.shape[:2]:
            raise ValueError(
                f"a criterion must return unreduced per-step losses of shape (T, B) = "
                f"{tuple(outputs.shape[:2])}, got {tuple(losses.shape)}; write it with "
                "reduction='none'"
            )
        return losses.flatten(2).mean(-1) if losses.dim() > 2 else losses

    # -- weights ------------------------------------------------------------------------------
    def _given_mask(self, total: int) -> Tensor | None:
        """The user's mask for a ``total``-step sequence (callables are evaluated once per ``total``)."""
        if self.mask is None:
            return None
        if not callable(self.mask):
            return torch.as_tensor(self.mask)
        if total not in self._mask_cache:
            self._mask_cache.clear()
            self._mask_cache[total] = torch.as_tensor(self.mask(total))
        return self._mask_cache[total]

    def window_mask(
        self,
        total: int,
        batch: int,
        *,
        start: int = 0,
        stop: int | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> Tensor:
        """The mask ``m`` of steps ``[start, stop)`` of a ``total``-step sequence, ``(stop-start, batch)``.

        Costs O(window), so an online rule pays O(1) per step, not O(T).
        """
        stop = total if stop is None else stop
        if not 0 <= start < stop <= total:
            raise ValueError(f"window [{start}, {stop}) is not inside a sequence of {total} steps")
        m = torch.ones(stop - start, batch, device=device, dtype=dtype)
        given = self._given_mask(total)
        if given is not None:
            if given.dim() == 1:
                given = given[:, None]
            if given.dim() != 2 or given.shape[0] != total or given.shape[1] not in (1, batch):
                raise ValueError(
                    f"mask must have shape ({total},) or ({total}, {batch}), got "
                    f"{tuple(given.shape)}"
                )
            m = m * given[start:stop].to(device=device, dtype=dtype)
        if self.last is not None:
            first = max(0, total - self.last)  # the first counted step
            if first > start:
                m[: min(stop, first) - start] = 0
        return m

    def full_mask(self, total: int, batch: int, *, device: Any = None, dtype: Any = None) -> Tensor:
        """The mask ``m`` of a whole sequence, shape ``(total, batch)``."""
        return self.window_mask(total, batch, device=device, dtype=dtype)

    def weights(
        self,
        total: int,
        batch: int,
        *,
        start: int = 0,
        stop: int | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> Tensor:
        """Loss weights ``w`` for the window ``[start, stop)`` of a ``total``-step sequence.

        Returns ``(stop - start, batch)``; the sign of ``maximize`` and the ``mean`` normaliser
        (over the window) are included, so ``L_window = Σ w ⊙ per_sample(...)``.
        """
        m = self.window_mask(total, batch, start=start, stop=stop, device=device, dtype=dtype)
        if self.reduction == "mean":
            # m / N, and 0 when the window counts nothing (no host sync on the condition)
            m = m / torch.clamp(m.sum(), min=torch.finfo(m.dtype).tiny)
        return -m if self.maximize else m

    def loss(
        self, outputs: Any, targets: Any, *, start: int = 0, total: int | None = None
    ) -> Tensor:
        """The (minimised) loss of outputs/targets covering steps ``[start, start+T)`` of ``total``.

        The window is the given steps; with the default ``start=0, total=None`` the outputs are
        the whole sequence.
        """
        per = self.per_sample(outputs, targets)
        T, B = per.shape
        total = start + T if total is None else total
        w = self.weights(total, B, start=start, stop=start + T, device=per.device, dtype=per.dtype)
        return (w * per).sum()

    def penalty(self) -> Tensor | None:
        """Sum of the regularizer terms, or None when there are none."""
        out: Tensor | None = None
        for r in self.regularizers:
            v = r()
            out = v if out is None else out + v
        return out
