"""The data of the trace engine: compiled relations and parameters, and what a block returns.

A *block* is a run of ``K`` consecutive steps processed together: the steps run one after
the other (each from the detached state the previous one produced), then the learning signals
and Jacobians of all ``K`` steps come from one backward pass each. Every per-step quantity of a
:class:`TraceBlock` therefore carries a leading ``K`` axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from chronograd.traces.intercept import Form


class Relation(NamedTuple):
    """One linear call ``y = W z + b`` of the step, as compiled.

    Attributes:
        weight, bias: parameter names (bias None when absent or not a parameter).
        form: ``"linear"`` (``W`` is (H, I)), ``"right"`` (``W`` is (I, H)) or ``"left"``.
        hoisted: computed for the whole chunk by the cell's ``input_map``.
        position: call position within ``input_map`` (hoisted) or the step.
        leaf: for hoisted relations, the index of ``y`` among ``input_map``'s output leaves.
        group: the hidden group ``y`` feeds (None: an output relation, or untrained).
        trained: its weight or bias is trained.
        direct: ``y`` also reaches the step's output other than through the group's state.
        sweep: its input depends on the step's new state (the learning signal crosses it).
        in_features, out_features: ``I`` and ``H``.
    """

    weight: str
    bias: str | None
    form: Form
    hoisted: bool
    position: int
    leaf: int | None
    group: int | None
    trained: bool
    direct: bool
    sweep: bool
    in_features: int
    out_features: int


class NeuronParam(NamedTuple):
    """A parameter that acts on each neuron separately (``(H,)``) or on all alike (a scalar).

    Attributes:
        name: the parameter's name.
        groups: the hidden groups whose state it changes.
        shared: a single value for all neurons (numel 1).
        direct: it also reaches the step's output other than through the state.
    """

    name: str
    groups: tuple[int, ...]
    shared: bool
    direct: bool


class Chunk(NamedTuple):
    """A chunk's inputs prepared for :meth:`TraceGraph.run` (hoisted input maps applied).

    Attributes:
        xs: ``(T, B, I)`` raw inputs.
        u: per-step step inputs: ``input_map(xs)`` split over time, or ``xs`` split over time.
        ys: per relation, ``(T, B, H)`` outputs of hoisted relations (None for step relations).
        zs: per relation, ``(T, B, I)`` inputs of hoisted relations (None for step relations).
        params: the model's parameters by name (looked up once per chunk).
    """

    xs: Tensor
    u: list[Any]
    ys: list[Tensor | None]
    zs: list[Tensor | None]
    params: dict[str, nn.Parameter]


class TraceBlock(NamedTuple):
    """What :meth:`TraceGraph.run` returns for ``K`` steps (leading axis ``K`` everywhere).

    Attributes:
        outputs: the steps' outputs (detached), ``(K, B, ...)``.
        state: the state after the last step (detached).
        loss: ``Σ_k ℓ_k`` (detached scalar) when a loss was given, else None.
        inputs: per relation, its inputs ``z`` (K, B, I) (None for untrained relations).
        D: per hidden group, ``(K, B, H, S, S)``: ``D[k, b, h, a, c] = ∂h^a_k/∂h^c_{k-1}``.
        Df: per relation, ``(K, B, H, S)`` for trained state relations (else None).
        Dp: ``{(param, group): (K, B, H, S)}`` for per-neuron parameters.
        delta: per group, ``(K, B, H, S)`` learning signal (None without a signal).
        delta_prev: per group, ``(K, B, H, S)`` previous-state signal (None unless requested).
        exact: ``{param: grad}`` exact same-step gradients summed over the block (output
            relations and parameters, and the direct terms of relations/parameters that also
            reach the output).
        readout: only when requested (``TraceGraph.run(readout=...)``): ``(σ, L)`` for the
            group feeding a leaky readout: ``σ`` (K, B, H, S) ``= ∂z_t/∂h_t`` of the group's
            output ``z``, ``L`` (K, B, H) ``= W_outᵀ ∂ℓ_t/∂y_t`` (None without a signal).
    """

    outputs: Any
    state: Any
    loss: Tensor | None
    inputs: tuple[Tensor | None, ...]
    D: tuple[Tensor, ...]
    Df: tuple[Tensor | None, ...]
    Dp: dict[tuple[str, int], Tensor]
    delta: tuple[Tensor, ...] | None
    delta_prev: tuple[Tensor, ...] | None
    exact: dict[str, Tensor]
    readout: tuple[Tensor, Tensor | None] | None = None


class TraceStep(NamedTuple):
    """One step (:meth:`TraceGraph.solve`): the fields of :class:`TraceBlock` without ``K``.

    ``D`` is ``(B, H, S, S)``, ``Df``/``Dp``/``delta``/``delta_prev`` are ``(B, H, S)``,
    ``inputs`` ``(B, I)``, ``outputs`` and ``state`` those of the step.
    """

    outputs: Any
    state: Any
    loss: Tensor | None
    inputs: tuple[Tensor | None, ...]
    D: tuple[Tensor, ...]
    Df: tuple[Tensor | None, ...]
    Dp: dict[tuple[str, int], Tensor]
    delta: tuple[Tensor, ...] | None
    delta_prev: tuple[Tensor, ...] | None
    exact: dict[str, Tensor]


@dataclass
class Record:
    """The steps of one block as run, with their autograd graphs (indexed ``[k][...]``).

    Attributes:
        h_prev: per step, the state tensors before it (graph leaves).
        new: per step, the state tensors after it.
        ys: per step and relation, the relation output the step used: a cut leaf, or (uncut
            mode) the output itself.
        full: per step and relation, the uncut output ``W z + b`` (graph to ``z`` and ``W``).
        zs: per step and relation, the relation input ``z``.
        outs: per step, the outputs.
        us: per step, the step input (hoisted relation outputs replaced by ``ys``).
        states: per step, the state before it (a template for ``tree_unflatten``).
    """

    h_prev: list[list[Tensor]] = field(default_factory=list)
    new: list[list[Tensor]] = field(default_factory=list)
    ys: list[list[Tensor | None]] = field(default_factory=list)
    full: list[list[Tensor | None]] = field(default_factory=list)
    zs: list[list[Tensor | None]] = field(default_factory=list)
    outs: list[Any] = field(default_factory=list)
    us: list[Any] = field(default_factory=list)
    states: list[Any] = field(default_factory=list)


class StepOf(nn.Module):
    """Wraps a hoisted cell so ``functional_call`` can run ``cell.step(u, state)``."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, u: Any, state: Any) -> tuple[Any, Any]:
        return self.cell.step(u, state)  # type: ignore[operator]


def relation_grads(rel: Relation, z: Tensor, gy: Tensor) -> dict[str, Tensor]:
    """``∂/∂W`` and ``∂/∂b`` of ``<gy, W z + b>`` for a batch: ``z`` (N, I), ``gy`` (N, H)."""
    out = {rel.weight: gy.t() @ z if rel.form == "linear" else z.t() @ gy}
    if rel.bias is not None:
        out[rel.bias] = gy.sum(0)
    return out


def add_into(acc: dict[str, Tensor], more: dict[str, Tensor]) -> None:
    """``acc[k] += more[k]`` for every key (creating missing ones)."""
    for k, v in more.items():
        acc[k] = acc[k] + v if k in acc else v


def vjp(
    outputs: Sequence[Tensor], inputs: Sequence[Tensor], cots: Sequence[Tensor]
) -> list[Tensor | None]:
    """``autograd.grad`` keeping the graph; None for inputs without a path (or no grad)."""
    live = [k for k, t in enumerate(inputs) if t.requires_grad]
    outs = [(o, c) for o, c in zip(outputs, cots) if o.requires_grad]
    res: list[Tensor | None] = [None] * len(inputs)
    if not live or not outs:
        return res
    got = torch.autograd.grad(
        [o for o, _ in outs], [inputs[k] for k in live], [c for _, c in outs],
        retain_graph=True, allow_unused=True,
    )  # fmt: skip
    for k, v in zip(live, got):
        res[k] = v
    return res


def some(x: Tensor | None) -> Tensor:
    """``x``, asserting it is present (a relation output every step must have)."""
    assert x is not None, "relation output missing: the step's calls changed"
    return x


def stack_or_zeros(xs: Sequence[Tensor | None], like: Tensor) -> Tensor:
    """``torch.stack`` with zeros standing in for missing entries."""
    return torch.stack([torch.zeros_like(like) if x is None else x for x in xs])


def reduce_to(x: Tensor, p: Tensor) -> Tensor:
    """Sum a ``(..., B, H, S)`` tensor down to the shape of parameter ``p`` (scalar or (H,))."""
    if p.numel() == 1:
        return x.sum().reshape(p.shape)
    return x.reshape(-1, x.shape[-2], x.shape[-1]).sum((0, 2)).reshape(p.shape)
