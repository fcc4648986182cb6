"""Constraints: projections applied to a weight after every update, or built into it.

A constraint is a callable ``c() -> None`` that projects one referenced parameter in place
(under ``torch.no_grad``). Pass them to ``Trainer(..., constraints=[...])`` or to
``training.apply_to_model(model, optimizer, constraints=[...])``: they run, in order, after every
optimizer step and after every direct update, for every rule. Each one is idempotent
(``project(project(W)) = project(W)``)::

    DaleProjection  W ← S ⊙ relu(S ⊙ W)      S: the presynaptic signs spread over W (see below)
    NoAutapses      W_ii ← 0                 (square recurrent weights: no self-connections)
    SparsityMask    W ← M ⊙ W                M: a fixed 0/1 connectivity mask

Signs follow :mod:`chronograd.dale`: per-neuron signs ``s`` ``(n_pre,)`` with ``pre_dim=0`` for
``W[pre, post]`` (``x @ W``) and ``pre_dim=1`` for ``nn.Linear`` weights ``(post, pre)``; or an
element-wise sign matrix shaped like ``W``. A sign of 0 forces the weight to 0. With ``S`` the
projection clamps each weight to its presynaptic sign: ``max(W, 0)`` where ``S = +1``,
``min(W, 0)`` where ``S = -1``.

The same law can instead be built into the parameterisation with
``torch.nn.utils.parametrize`` (:func:`dale_parametrize`): ``W = |W_raw| ⊙ S``. Then the
trained parameter is ``<module>.parametrizations.<name>.original`` and every value of ``W``
obeys the law by construction; it works with ``torch.func.functional_call`` and with every
rule that differentiates through the step (BPTT, TBPTT). Rules that look for weights entering
linear maps as parameters (the eligibility-trace engine) see a computed tensor instead.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import final

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from chronograd.dale import broadcast_signs


def _check_weight(weight: object, owner: str) -> Tensor:
    if not isinstance(weight, Tensor):
        raise TypeError(f"{owner}: weight must be a tensor (a parameter), got {type(weight)}")
    if not weight.is_leaf:
        raise ValueError(
            f"{owner}: the weight is a computed tensor (a parametrized weight?); constrain the "
            "trained leaf parameter, or use dale_parametrize instead of a projection"
        )
    return weight


def _check_signs(signs: Tensor, owner: str) -> Tensor:
    if not isinstance(signs, Tensor):
        raise TypeError(f"{owner}: signs must be a tensor, got {type(signs).__name__}")
    bad = ~((signs == 1) | (signs == -1) | (signs == 0))
    if bool(bad.any()):
        raise ValueError(f"{owner}: signs must be -1, 0 or +1 (use torch.sign(reference))")
    return signs.detach().clone()


def dale_project(weight: Tensor, signs: Tensor) -> Tensor:
    """``S ⊙ relu(S ⊙ W)`` for element-wise signs ``S`` shaped like ``W`` (pure)."""
    return signs * torch.relu(signs * weight)


class Constraint(nn.Module, abc.ABC):
    """Abstract base: ``c()`` replaces the referenced ``weight`` by ``project(weight)``.

    The weight is referenced, not registered: it appears once, in its model's state dict.
    Buffers (signs, masks) are registered here, so ``to()`` moves them.
    """

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self._target = (_check_weight(weight, type(self).__name__),)  # a reference, unregistered

    @property
    def weight(self) -> Tensor:
        """The constrained parameter."""
        return self._target[0]

    @abc.abstractmethod
    def project(self, weight: Tensor) -> Tensor:
        """The projection of ``weight`` (pure; same shape)."""

    def forward(self) -> None:
        with torch.no_grad():
            self.weight.copy_(self.project(self.weight))

    def violations(self) -> int:
        """How many entries the projection would change."""
        with torch.no_grad():
            return int((self.project(self.weight) != self.weight).sum())

    def holds(self) -> bool:
        """True when the weight already satisfies the constraint exactly."""
        return self.violations() == 0


@final
class DaleProjection(Constraint):
    """Clamp every weight to its presynaptic sign: ``W ← S ⊙ relu(S ⊙ W)``.

    Args:
        weight: the parameter, ``(n_pre, n_post)`` with ``pre_dim=0`` or ``(n_post, n_pre)``
            (``nn.Linear``) with ``pre_dim=1``.
        signs: per presynaptic neuron ``(n_pre,)`` in ``{-1, +1}`` (e.g.
            :func:`~chronograd.dale.neuron_signs`), or element-wise shaped like ``weight`` in
            ``{-1, 0, +1}`` (e.g. :func:`~chronograd.dale.dale_reference`).
        pre_dim: the presynaptic axis; required with per-neuron signs.
    """

    signs: Tensor

    def __init__(self, weight: Tensor, signs: Tensor, *, pre_dim: int | None = None) -> None:
        super().__init__(weight)
        s = _check_signs(signs, "DaleProjection")
        full = broadcast_signs(s.to(weight.device), weight.shape, pre_dim)
        self.register_buffer("signs", full.to(weight.dtype).contiguous())

    def project(self, weight: Tensor) -> Tensor:
        return dale_project(weight, self.signs.to(weight.dtype))


@final
class NoAutapses(Constraint):
    """Zero the diagonal of a square recurrent weight: ``W_ii ← 0`` (no self-connections)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__(weight)
        if weight.dim() != 2 or weight.shape[0] != weight.shape[1]:
            raise ValueError(
                f"NoAutapses needs a square recurrent weight, got shape {tuple(weight.shape)}"
            )

    def project(self, weight: Tensor) -> Tensor:
        eye = torch.eye(weight.shape[0], dtype=torch.bool, device=weight.device)
        return weight.masked_fill(eye, 0.0)


@final
class SparsityMask(Constraint):
    """Keep a fixed connectivity: ``W ← M ⊙ W`` with ``M`` a 0/1 (or boolean) mask like ``W``."""

    mask: Tensor

    def __init__(self, weight: Tensor, mask: Tensor) -> None:
        super().__init__(weight)
        if not isinstance(mask, Tensor) or mask.shape != weight.shape:
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(
                f"mask must be a tensor shaped like the weight {tuple(weight.shape)}, got {shape}"
            )
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask entries must be 0 or 1 (or booleans)")
        self.register_buffer("mask", mask.detach().to(device=weight.device, dtype=torch.bool))

    def project(self, weight: Tensor) -> Tensor:
        return weight.masked_fill(~self.mask, 0.0)


def apply_constraints(constraints: Iterable[Callable[[], object]]) -> None:
    """Run each constraint once, in order."""
    for c in constraints:
        c()


def check_constraints(constraints: Iterable[object]) -> tuple[Callable[[], object], ...]:
    """Validate a ``constraints=`` argument: a sequence of callables ``() -> None``."""
    if isinstance(constraints, (Constraint, Tensor)) or callable(constraints):
        raise TypeError("constraints must be a list of constraints, e.g. [DaleProjection(...)]")
    out = tuple(constraints)
    for c in out:
        if not callable(c):
            raise TypeError(f"a constraint must be callable () -> None, got {type(c).__name__}")
    return out  # type: ignore[return-value]


@final
class DaleSign(nn.Module):
    """Parametrization ``W = |W_raw| ⊙ S`` (``S``: element-wise signs, a buffer).

    ``right_inverse`` is the identity, exact on every ``W`` that obeys the signs; registering it
    on a weight that does not reflects the wrong-signed entries (``W_raw = W``, so
    ``W ← |W| ⊙ S``).
    """

    signs: Tensor

    def __init__(self, signs: Tensor) -> None:
        super().__init__()
        self.register_buffer("signs", _check_signs(signs, "DaleSign"))

    def forward(self, raw: Tensor) -> Tensor:
        return raw.abs() * self.signs.to(raw.dtype)

    def right_inverse(self, weight: Tensor) -> Tensor:
        """The raw weight that gives ``weight`` (itself: the sign is applied on the next read)."""
        return weight


def dale_parametrize(
    module: nn.Module, name: str, signs: Tensor, *, pre_dim: int | None = None
) -> nn.Module:
    """Make ``module.<name>`` obey Dale's law by construction: ``W = |W_raw| ⊙ S``.

    Args:
        module: e.g. a cell's ``recurrent`` ``nn.Linear``.
        name: the parameter, e.g. ``"weight"``.
        signs: per presynaptic neuron ``(n_pre,)`` (with ``pre_dim``: 1 for ``nn.Linear``) or
            element-wise like the weight.

    Returns:
        ``module``, whose trained parameter is now ``parametrizations.<name>.original``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"{type(module).__name__} has no tensor attribute {name!r}")
    s = _check_signs(signs, "dale_parametrize")
    full = broadcast_signs(s.to(weight.device), weight.shape, pre_dim)
    parametrize.register_parametrization(module, name, DaleSign(full.to(weight.dtype)))
    return module
