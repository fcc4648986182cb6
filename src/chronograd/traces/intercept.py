"""Find and intercept the trainable linear maps ("relations") inside one step.

A *relation* is a call ``y = z Wᵀ + b`` (``F.linear``, hence every ``nn.Linear``) or
``y = z W (+ b)`` (``z @ W``, ``torch.matmul``, ``torch.mm``, ``torch.addmm``) whose weight ``W``
is one of the model's trainable parameters. Everything else in the step is "neuron dynamics".

:class:`intercept_linears` is a ``TorchFunctionMode``: inside it, every relation call is handed
to ``handler(call, default)``, which may return ``default()`` (the original result), record the
call, or return something else, e.g. an injected output held fixed (the eligibility-trace
engine) or the same value with a different gradient (OTTT's presynaptic traces). It works
under ``torch.func`` transforms, so ``jvp``/``vjp`` of a step with injected relation outputs is
an ordinary function call. Parameters are recognised by identity, so pass the tensors actually
used in the step (e.g. those given to ``functional_call``).

This module and the rules are the only places that use ``torch.func``-level machinery.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

Form = Literal["linear", "right", "left"]


class LinearCall(NamedTuple):
    """One relation call inside a step.

    Attributes:
        position: position among the relation calls of the step (0, 1, ...).
        weight: name of ``W`` among the model's parameters.
        bias: name of ``b`` when it is a parameter, else None.
        input: ``z``, shape ``(..., I)`` (``(I, ...)`` for ``form="left"``).
        form: ``"linear"``: ``y = z Wᵀ + b`` with ``W`` of shape ``(H, I)``;
            ``"right"``: ``y = z W + b`` with ``W`` of shape ``(I, H)``;
            ``"left"``: ``y = W z`` (``W`` on the left; the engine cannot use these).
    """

    position: int
    weight: str
    bias: str | None
    input: Tensor
    form: Form


Handler = Callable[[LinearCall, Callable[[], Tensor]], Tensor]

_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm}


class intercept_linears(TorchFunctionMode):
    """Context manager routing every relation call through ``handler``.

    Args:
        params: ``{name: tensor}`` of the parameters that count as relation weights.
        handler: ``handler(call, default) -> Tensor``; ``default()`` computes the original call.

    Attributes:
        calls: the :class:`LinearCall` s seen so far, in order.
    """

    def __init__(self, params: Mapping[str, Tensor], handler: Handler | None = None) -> None:
        super().__init__()
        self._names = {id(t): n for n, t in params.items()}
        self._handler = handler
        self.calls: list[LinearCall] = []

    def _name(self, t: Any) -> str | None:
        return self._names.get(id(t)) if isinstance(t, Tensor) else None

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        call: LinearCall | None = None
        if func is F.linear:
            z = args[0] if args else kwargs["input"]
            w = args[1] if len(args) > 1 else kwargs.get("weight")
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            name = self._name(w)
            if name is not None:
                call = LinearCall(len(self.calls), name, self._name(b), z, "linear")
        elif func in _MATMULS and len(args) == 2:
            a, w = args
            if self._name(w) is not None and w.dim() == 2:
                call = LinearCall(len(self.calls), self._name(w), None, a, "right")  # type: ignore[arg-type]
            elif self._name(a) is not None and a.dim() == 2:
                call = LinearCall(len(self.calls), self._name(a), None, w, "left")  # type: ignore[arg-type]
        elif func is torch.addmm and len(args) >= 3:
            b, z, w = args[:3]
            if self._name(w) is not None and not kwargs and len(args) == 3:
                call = LinearCall(len(self.calls), self._name(w), self._name(b), z, "right")  # type: ignore[arg-type]
        if call is None:
            return func(*args, **kwargs)
        self.calls.append(call)
        if self._handler is None:
            return func(*args, **kwargs)
        return self._handler(call, lambda: func(*args, **kwargs))


def find_relations(
    model: nn.Module, x: Tensor, state: Any, params: Mapping[str, Tensor] | None = None
) -> list[LinearCall]:
    """The relation calls of one step ``model(x, state)`` (nothing is changed).

    Args:
        params: the candidate weights (default: the model's trainable parameters).
    """
    if params is None:
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad(), intercept_linears(params) as mode:
        model(x, state)
    return mode.calls


def relation_output(call: LinearCall, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Recompute ``y`` of a relation call from its input and the given weight (and bias)."""
    if call.form == "linear":
        return F.linear(call.input, weight, bias)
    if call.form == "right":
        y = call.input @ weight
        return y if bias is None else y + bias
    raise TypeError(
        f"relation {call.weight!r} multiplies its input from the left (W @ z); write it as "
        "F.linear(z, W) or z @ W.T so the input's last dimension is the presynaptic one"
    )
