"""How much work a call does: matmul FLOPs and bytes touched, counted op by op.

With the machine's floors (:func:`~chronograd.bench.matmul_gflops`,
:func:`~chronograd.bench.bandwidth_gbs`) these turn a measured time into a fraction of what the
hardware allows: ``(flops / seconds) / matmul floor`` for matmul-bound work (BPTT's big
matmuls) and ``(bytes / seconds) / bandwidth`` for memory-bound work (eligibility-trace
updates that stream a large tensor every step).

* FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode` (matmul-like ops:
  ``mm``, ``addmm``, ``bmm``, convolutions...; element-wise ops count zero), backward included.
* Bytes are the sizes of every operand and result of every ATen op that is not a view
  (in-place ops count their tensor as read and written). This is the traffic of an
  implementation that streams each operand from memory once per op and keeps nothing in cache:
  the right model for tensors larger than the caches, an overestimate of DRAM traffic for small
  ones (which stay in cache), and blind to matmuls that re-read their operands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode


class Work(NamedTuple):
    """Work of one call: ``flops`` (matmul-like FLOPs) and ``bytes`` (operands + results)."""

    flops: int
    bytes: int


class _ByteCounter(TorchDispatchMode):
    """Sums the sizes of the tensors going into and out of every non-view ATen op."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not getattr(func, "is_view", False):
            for t in tree_leaves((args, kwargs, out)):
                if isinstance(t, torch.Tensor):
                    self.bytes += t.numel() * t.element_size()
        return out


def count_work(fn: Callable[[], object]) -> Work:
    """Run ``fn()`` once and count its matmul FLOPs and bytes touched (see the module docstring).

    The counting modes slow the call down; never time a call while counting it.
    """
    flops = FlopCounterMode(display=False)
    counter = _ByteCounter()
    with flops, counter:
        fn()
    return Work(int(flops.get_total_flops()), int(counter.bytes))
