"""Surrogate spike functions.

``spike(x) = H(x)`` (1 where ``x > 0``) in the forward pass; the derivative used by ``backward``
and by forward-mode ``jvp`` is the surrogate pseudo-derivative ``ψ(x)``. ``x`` is the normalised
distance to threshold, ``x = (v - A) / v_th``, so the derivative w.r.t. ``v`` is ``ψ(x) / v_th``.

Shipped surrogates (``x`` normalised):

* :class:`Triangle` (Bellec et al. 2018/2020): ``ψ(x) = γ max(0, 1 - |x|)``, ``γ = 0.3``.
* :class:`FastSigmoid` (SuperSpike, Zenke & Ganguli 2018): ``ψ(x) = 1 / (1 + β|x|)²``.
* :class:`Sigmoid`: ``ψ(x) = β σ(βx) (1 - σ(βx))``.

The autograd function is new-style (``setup_context``, ``jvp``, ``generate_vmap_rule``), so
``torch.func.jvp/vjp/vmap/jacrev/jacfwd`` all work through it.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, final

import torch
from torch import Tensor

try:  # private, so guarded: the fast path below falls back to Function.apply without them
    from torch._C import _are_functorch_transforms_active as _transforms_active
    from torch._functorch.utils import unwrap_dead_wrappers as _unwrap_dead
except ImportError:  # pragma: no cover - other torch versions
    _transforms_active = None  # type: ignore[assignment]


class _Spike(torch.autograd.Function):
    generate_vmap_rule = True

    @classmethod
    def apply(cls, x: Tensor, surrogate: Surrogate) -> Tensor:
        """``Function.apply`` re-binds the arguments with ``inspect.signature`` on every call
        (about 30 µs, more than the spike itself); ``forward`` has no defaults, so outside
        ``torch.func`` transforms we go straight to the C++ ``apply``."""
        if _transforms_active is None or _transforms_active():
            return super().apply(x, surrogate)
        (x,) = _unwrap_dead((x,))
        return super(torch.autograd.Function, cls).apply(x, surrogate)  # type: ignore[misc]

    @staticmethod
    def forward(x: Tensor, surrogate: Surrogate) -> Tensor:
        return (x > 0).to(x.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, surrogate = inputs
        ctx.surrogate = surrogate
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * ctx.surrogate.derivative(x), None

    @staticmethod
    def jvp(ctx: Any, x_tangent: Tensor, _: Any) -> Tensor:
        (x,) = ctx.saved_tensors
        return x_tangent * ctx.surrogate.derivative(x)


class Surrogate(abc.ABC):
    """A spike nonlinearity with a pseudo-derivative; frozen dataclasses, hashable."""

    @abc.abstractmethod
    def derivative(self, x: Tensor) -> Tensor:
        """The pseudo-derivative ``ψ(x)`` used in place of ``H'(x)``."""

    def __call__(self, x: Tensor) -> Tensor:
        """Spikes ``H(x)`` (same shape and dtype as ``x``) with surrogate gradients."""
        return _Spike.apply(x, self)


@final
@dataclass(frozen=True)
class Triangle(Surrogate):
    """Bellec et al.'s piecewise-linear pseudo-derivative ``γ max(0, 1 - |x|)``."""

    gamma: float = 0.3

    def __post_init__(self) -> None:
        if not self.gamma > 0:
            raise ValueError(f"Triangle(gamma=...) must be > 0, got {self.gamma}")

    def derivative(self, x: Tensor) -> Tensor:
        return self.gamma * torch.clamp(1.0 - x.abs(), min=0.0)


@final
@dataclass(frozen=True)
class FastSigmoid(Surrogate):
    """SuperSpike's ``1 / (1 + β|x|)²`` (the derivative of a fast sigmoid)."""

    slope: float = 10.0

    def __post_init__(self) -> None:
        if not self.slope > 0:
            raise ValueError(f"FastSigmoid(slope=...) must be > 0, got {self.slope}")

    def derivative(self, x: Tensor) -> Tensor:
        return 1.0 / (1.0 + self.slope * x.abs()) ** 2


@final
@dataclass(frozen=True)
class Sigmoid(Surrogate):
    """The logistic's derivative ``β σ(βx)(1 - σ(βx))``."""

    slope: float = 5.0

    def __post_init__(self) -> None:
        if not self.slope > 0:
            raise ValueError(f"Sigmoid(slope=...) must be > 0, got {self.slope}")

    def derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(self.slope * x)
        return self.slope * s * (1.0 - s)


SURROGATES: dict[str, type[Surrogate]] = {
    "triangle": Triangle,
    "fast_sigmoid": FastSigmoid,
    "sigmoid": Sigmoid,
}


def get_surrogate(spec: str | Surrogate) -> Surrogate:
    """A surrogate from its name (``triangle``, ``fast_sigmoid``, ``sigmoid``) or as given."""
    if isinstance(spec, Surrogate):
        return spec
    if isinstance(spec, str) and spec in SURROGATES:
        return SURROGATES[spec]()
    raise ValueError(
        f"unknown surrogate {spec!r}; expected one of {sorted(SURROGATES)} or a Surrogate instance"
    )


def decay(tau: float, dt: float = 1.0) -> float:
    """Decay factor ``exp(-dt / tau)`` of a leaky variable with time constant ``tau``."""
    if not tau > 0:
        raise ValueError(f"time constants must be > 0, got tau={tau}")
    return math.exp(-dt / tau)
