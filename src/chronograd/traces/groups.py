"""Hidden groups: which state tensors form the neurons the eligibility traces live on.

A *hidden group* is one population of ``H`` neurons with ``S`` state variables each: ``S`` state
tensors of shape ``(B, H)`` whose element ``h`` belongs to neuron ``h``. The trace engine keeps,
per group, each neuron's own ``S × S`` block of the state-to-state Jacobian.

Grouping rule (default). The state tree is walked cell by cell (a
:class:`~chronograd.cells.Stack` state is a tuple with one state per layer, each layer walked
with its own cell). Within one cell's state (a ``NamedTuple``, tuple or dict of tensors), the
tensors with equal shape ``(B, H)`` form one group, in order of appearance::

    LIF       LIFState(v)             -> one group, S = 1
    ALIF      ALIFState(v, a)         -> one group, S = 2
    SynapticLIF  (v, i)               -> one group, S = 2
    LeakyReadout ReadoutState(y)      -> its own group, S = 1
    Map       EmptyState()            -> no group

Explicit split (protocol). A cell whose state holds same-shaped tensors that are *different*
populations (an excitatory and an inhibitory population of equal size, say) declares its groups
with an optional method returning field names of its ``NamedTuple`` state, one tuple per group::

    def trace_groups(self) -> tuple[tuple[str, ...], ...]:
        return (("e",), ("i",))

Every state tensor must belong to exactly one group and be 2-D ``(B, H)``; anything else raises
``TypeError`` naming the tensor and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from torch import Tensor, nn

from chronograd.cells.stack import Stack


class HiddenGroup(NamedTuple):
    """One population of neurons in the state.

    Attributes:
        name: where it lives, e.g. ``"layers.0[v,a]"``.
        leaves: indices of its state tensors in ``tree_leaves(state)``, one per state variable.
        fields: the state variables' names (``"v"``, ``"a"``...).
        size: ``H``, neurons in the group.
        owner: module path of the cell whose state it is (``""``: the model itself).
    """

    name: str
    leaves: tuple[int, ...]
    fields: tuple[str, ...]
    size: int
    owner: str = ""

    @property
    def S(self) -> int:
        """State variables per neuron."""
        return len(self.leaves)


def _children(node: Any) -> Iterator[tuple[str, Any]]:
    """``(field, child)`` pairs of a state node, in ``tree_leaves`` order."""
    if hasattr(node, "_fields"):
        yield from zip(node._fields, node)
    elif isinstance(node, (tuple, list)):
        yield from ((str(i), c) for i, c in enumerate(node))
    elif isinstance(node, dict):
        yield from ((str(k), node[k]) for k in node)


def _count(node: Any) -> int:
    if isinstance(node, Tensor):
        return 1
    return sum(_count(c) for _, c in _children(node))


def _shape_error(path: str, t: Tensor, batch: int) -> TypeError:
    return TypeError(
        f"state tensor {path!r} has shape {tuple(t.shape)}; the eligibility-trace engine needs "
        f"every state tensor shaped (B, H) = ({batch}, H) with one element per neuron. Fix: keep "
        "the state as (B, H) tensors (flatten extra dims in the cell), or train this model with "
        "BPTT/TBPTT"
    )


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _declared(cell: nn.Module, node: Any, path: str, start: int, batch: int) -> list[HiddenGroup]:
    spec = cell.trace_groups()  # type: ignore[operator]
    if not hasattr(node, "_fields"):
        raise TypeError(
            f"{type(cell).__name__}.trace_groups() names state fields, so its state must be a "
            f"NamedTuple; got {type(node).__name__}"
        )
    fields = list(node._fields)
    offsets, pos = {}, start
    for f, child in zip(fields, node):
        if not isinstance(child, Tensor):
            raise TypeError(f"{path}.{f}: trace_groups() needs tensor fields, got {type(child)}")
        offsets[f] = pos
        pos += 1
    named = [f for g in spec for f in g]
    if sorted(named) != sorted(fields):
        raise TypeError(
            f"{type(cell).__name__}.trace_groups() returned {spec!r}; it must name every field "
            f"of the state exactly once: {tuple(fields)}"
        )
    groups = []
    for g in spec:
        shapes = {tuple(node[fields.index(f)].shape) for f in g}
        t = node[fields.index(g[0])]
        if t.dim() != 2 or t.shape[0] != batch:
            raise _shape_error(f"{path}.{g[0]}", t, batch)
        if len(shapes) != 1:
            raise TypeError(
                f"{type(cell).__name__}.trace_groups(): the fields {g} of one group must have "
                f"equal shapes (B, H), got {sorted(shapes)}"
            )
        groups.append(
            HiddenGroup(
                f"{path}[{','.join(g)}]", tuple(offsets[f] for f in g), tuple(g), t.shape[1], path
            )
        )
    return groups


def _walk(
    cell: Any, node: Any, path: str, start: int, batch: int, owner: str = ""
) -> list[HiddenGroup]:
    """Groups of ``node`` (the state of ``cell`` at ``owner``), first leaf index ``start``."""
    if isinstance(cell, Stack) and isinstance(node, tuple) and len(node) == len(cell.layers):
        out: list[HiddenGroup] = []
        for i, (layer, sub) in enumerate(zip(cell.layers, node)):
            where = _join(owner, f"layers.{i}")
            out += _walk(layer, sub, where, start, batch, where)
            start += _count(sub)
        return out
    if cell is not None and callable(getattr(cell, "trace_groups", None)):
        return _declared(cell, node, path, start, batch)
    if isinstance(node, Tensor):  # a bare tensor state
        if node.dim() != 2 or node.shape[0] != batch:
            raise _shape_error(path or "state", node, batch)
        return [HiddenGroup(f"{path}[state]", (start,), ("state",), node.shape[1], owner)]
    out = []
    pending: dict[tuple[int, ...], tuple[list[str], list[int]]] = {}  # shape -> (fields, leaves)
    pos = start
    for field, child in _children(node):
        if isinstance(child, Tensor):
            if child.dim() != 2 or child.shape[0] != batch:
                raise _shape_error(_join(path, field), child, batch)
            fs, ls = pending.setdefault(tuple(child.shape), ([], []))
            fs.append(field)
            ls.append(pos)
            pos += 1
        else:
            out += _walk(None, child, _join(path, field), pos, batch, owner)
            pos += _count(child)
    for shape, (fs, ls) in pending.items():
        out.append(HiddenGroup(f"{path}[{','.join(fs)}]", tuple(ls), tuple(fs), shape[1], owner))
    return sorted(out, key=lambda g: g.leaves[0])


def hidden_groups(model: nn.Module, state: Any, batch: int) -> tuple[HiddenGroup, ...]:
    """The hidden groups of ``model``'s ``state`` (see the module docstring for the rule).

    Args:
        model: the cell (a :class:`~chronograd.cells.Stack` is walked layer by layer).
        state: a state of ``model`` for ``batch`` sequences.
        batch: ``B``.
    """
    return tuple(_walk(model, state, "", 0, batch))
