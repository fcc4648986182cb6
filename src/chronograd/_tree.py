"""Minimal pytree helpers for states, outputs and carries.

A *tree* is a tensor, ``None``, a Python number, or a (named) tuple, list or dict of trees.
States are ``NamedTuple``s of tensors; a :class:`~chronograd.cells.Stack` state is a tuple
of them. These helpers are written once and used by every rule and by the trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

Tree = Any


def _is_namedtuple(x: object) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def tree_map(fn: Callable[[Tensor], Any], tree: Tree) -> Tree:
    """Apply ``fn`` to every tensor leaf of ``tree``; other leaves are kept as they are."""
    if isinstance(tree, Tensor):
        return fn(tree)
    if _is_namedtuple(tree):
        return type(tree)(*(tree_map(fn, t) for t in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(tree_map(fn, t) for t in tree)
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    return tree


def tree_map2(fn: Callable[[Tensor, Tensor], Any], a: Tree, b: Tree) -> Tree:
    """Apply ``fn`` leaf-wise to two trees of the same structure."""
    if isinstance(a, Tensor):
        return fn(a, b)
    if _is_namedtuple(a):
        return type(a)(*(tree_map2(fn, x, y) for x, y in zip(a, b)))
    if isinstance(a, (tuple, list)):
        return type(a)(tree_map2(fn, x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return {k: tree_map2(fn, a[k], b[k]) for k in a}
    return a


def tree_leaves(tree: Tree) -> list[Tensor]:
    """The tensor leaves of ``tree`` in a fixed (depth-first) order."""
    out: list[Tensor] = []

    def visit(t: Tree) -> None:
        if isinstance(t, Tensor):
            out.append(t)
        elif isinstance(t, (tuple, list)):
            for s in t:
                visit(s)
        elif isinstance(t, dict):
            for k in t:
                visit(t[k])

    visit(tree)
    return out


def tree_unflatten(template: Tree, leaves: Sequence[Tensor]) -> Tree:
    """Rebuild a tree with the structure of ``template`` from ``leaves`` (as from tree_leaves)."""
    it = iter(leaves)
    result = tree_map(lambda _: next(it), template)
    rest = list(it)
    if rest:
        raise ValueError(
            f"tree_unflatten: {len(rest)} leaves left over; the template has fewer tensors "
            "than were given"
        )
    return result


def tree_stack(trees: Sequence[Tree], dim: int = 0) -> Tree:
    """Stack a sequence of trees with equal structure into one tree of stacked tensors."""
    first = trees[0]
    if isinstance(first, Tensor):
        return torch.stack(list(trees), dim)
    if _is_namedtuple(first):
        return type(first)(*(tree_stack([t[i] for t in trees], dim) for i in range(len(first))))
    if isinstance(first, (tuple, list)):
        return type(first)(tree_stack([t[i] for t in trees], dim) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: tree_stack([t[k] for t in trees], dim) for k in first}
    return first


def tree_index(tree: Tree, index: Any) -> Tree:
    """``tree[index]`` on every tensor leaf (e.g. one time step ``t`` of stacked outputs)."""
    return tree_map(lambda t: t[index], tree)


def tree_cat(trees: Sequence[Tree], dim: int = 0) -> Tree:
    """Concatenate trees of equal structure along ``dim``."""
    first = trees[0]
    if isinstance(first, Tensor):
        return torch.cat(list(trees), dim)
    if _is_namedtuple(first):
        return type(first)(*(tree_cat([t[i] for t in trees], dim) for i in range(len(first))))
    if isinstance(first, (tuple, list)):
        return type(first)(tree_cat([t[i] for t in trees], dim) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: tree_cat([t[k] for t in trees], dim) for k in first}
    return first


def detach(tree: Tree) -> Tree:
    """Detach every tensor of a state (or any tree): the truncation point of TBPTT."""
    return tree_map(torch.Tensor.detach, tree)


def first_leaf(tree: Tree) -> Tensor:
    """The first tensor leaf; raises ``ValueError`` when the tree holds none."""
    leaves = tree_leaves(tree)
    if not leaves:
        raise ValueError("expected a tensor or a tree of tensors, got no tensor at all")
    return leaves[0]
