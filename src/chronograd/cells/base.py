"""The cell protocol: one time step with explicit state.

A cell is an :class:`torch.nn.Module` that holds parameters, never state::

    state = cell.init_state(batch_size, device=..., dtype=...)   # NamedTuple of (B, ...) tensors
    y_t, state = cell(x_t, state)                                  # x_t: (B, input_size)

Any module with those two methods is a cell (duck typing); shipped cells derive from
:class:`Cell`. A cell whose input enters only through a state-independent map may also derive
from :class:`HoistedCell` and split its step into ``input_map`` (applied to all ``T`` steps at
once by :func:`chronograd.unroll`, one large matmul instead of ``T`` small ones) and ``step``.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple, final

import torch
from torch import Tensor, nn

Device = torch.device | str | None
State = Any  # a NamedTuple of tensors, or a tuple of them for composed cells


class Cell(nn.Module, abc.ABC):
    """Abstract base of the shipped cells (user cells only need the two methods).

    Attributes:
        input_size: features of ``x_t``.
        output_size: features of ``y_t``.
    """

    input_size: int
    output_size: int

    @abc.abstractmethod
    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> State:
        """Initial state for ``batch_size`` sequences (zeros unless the cell says otherwise)."""

    @abc.abstractmethod
    def forward(self, x: Tensor, state: State) -> tuple[Any, State]:
        """One step: ``x`` of shape ``(B, input_size)`` -> ``(y, new_state)``."""


class HoistedCell(Cell):
    """A cell whose step is ``step(input_map(x_t), state)`` with ``input_map`` state-free.

    ``input_map`` accepts any leading shape (``(B, I)`` or ``(T, B, I)``), so ``unroll`` applies
    it once to the whole sequence. The relation-discovery engine still sees the full step
    (``forward``), so hoisting changes speed, never gradients.
    """

    @abc.abstractmethod
    def input_map(self, x: Tensor) -> Any:
        """The state-independent part of the step, e.g. ``W_in x + b``: ``(..., I) -> (..., K)``."""

    @abc.abstractmethod
    def step(self, u: Any, state: State) -> tuple[Any, State]:
        """The rest of the step, given ``u = input_map(x_t)``."""

    def forward(self, x: Tensor, state: State) -> tuple[Any, State]:
        return self.step(self.input_map(x), state)


def is_cell(obj: object) -> bool:
    """True when ``obj`` is an ``nn.Module`` with ``init_state`` and ``forward``."""
    return isinstance(obj, nn.Module) and callable(getattr(obj, "init_state", None))


def check_cell(obj: object, argument: str = "cell") -> None:
    """Raise ``TypeError`` saying what a cell needs when ``obj`` is not one."""
    if is_cell(obj):
        return
    kind = type(obj).__name__
    if isinstance(obj, nn.Module):
        hint = (
            f"{kind} has no init_state(). A stateless layer such as nn.Linear goes inside a "
            "chronograd.cells.Stack wrapped in chronograd.cells.Map(...), or use a shipped cell "
            "(LeakyRNN, GRU, LIF, ALIF, LeakyReadout)."
        )
    else:
        hint = f"{kind} is not an nn.Module."
    raise TypeError(
        f"`{argument}` must be a chronograd cell: an nn.Module with "
        "init_state(batch_size, *, device=None, dtype=None) -> state and "
        f"forward(x_t, state) -> (y_t, new_state); got {kind}. {hint}"
    )


def param_like(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of a module's first parameter or buffer (CPU/float32 if it has none)."""
    for p in module.parameters():
        return p.device, p.dtype
    for b in module.buffers():
        if b.is_floating_point():
            return b.device, b.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def zeros_state(
    module: nn.Module,
    shape: tuple[int, ...],
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> Tensor:
    """``torch.zeros(shape)`` on the requested device/dtype, defaulting to the module's."""
    d, t = param_like(module)
    return torch.zeros(shape, device=device if device is not None else d, dtype=dtype or t)


class EmptyState(NamedTuple):
    """The state of a stateless layer."""


@final
class Map(Cell):
    """A stateless layer (``nn.Linear``, ``nn.Flatten``, pooling...) used as a cell in a Stack.

    ``y_t = module(x_t)``; the state is an empty tuple.

    Args:
        module: the layer applied at every step.
        input_size: features of ``x_t`` (defaults to ``module.in_features`` when present).
        output_size: features of ``y_t`` (defaults to ``module.out_features`` when present).
    """

    def __init__(
        self, module: nn.Module, input_size: int | None = None, output_size: int | None = None
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"Map wraps an nn.Module, got {type(module).__name__}")
        self.module = module
        i = input_size if input_size is not None else getattr(module, "in_features", None)
        o = output_size if output_size is not None else getattr(module, "out_features", None)
        if i is not None:
            self.input_size = int(i)
        if o is not None:
            self.output_size = int(o)

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> EmptyState:
        return EmptyState()

    def forward(self, x: Tensor, state: EmptyState) -> tuple[Tensor, EmptyState]:
        return self.module(x), state
