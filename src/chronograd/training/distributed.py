"""Data-parallel training on ``torch.distributed`` for every rule.

DistributedDataParallel only reduces gradients produced by ``backward()``; chronograd's online
rules write their gradients themselves. Every rule hands its gradient to the trainer as a
``RuleStep``, so the trainer averages it across ranks itself, once per optimizer step, as one
flattened bucket: ``g = Σ_r B_r g_r / Σ_r B_r`` with ``B_r`` the local batch size (DDP's
averaging convention; for ``reduction="mean"`` objectives with equal per-sample masks it equals
the gradient of the full batch exactly). Parameters and buffers, and the rule's persistent carry
(e.g. random feedback matrices), are broadcast from rank 0 when training starts. Rules that
update weights directly (``RuleStep.updates``, e.g. RLS) are refused unless they declare
``reducible_updates = True``. Rules that compute a gradient after an update (FPTT's two-pass
form) get the same average through the driver's ``reduce``.

Launch with ``torchrun --nproc-per-node N -m chronograd train ...`` (one node) or, on several
nodes, ``torchrun --nnodes M --nproc-per-node N --node-rank K --rdzv-backend c10d
--rdzv-endpoint HOST:PORT -m chronograd train ...`` on every node. The backend is NCCL when
the model is on a GPU, gloo otherwise; collectives time out after ``timeout`` seconds (env
``CHRONOGRAD_DIST_TIMEOUT``, default 300) so a rank that fails ends the job instead of hanging.

When a rank fails, every rank ends with one line naming it and the cause: a rank that raises
writes ``"<Type>: <message>"`` to the process group's store (from ``sys.excepthook``, or
:func:`note_failure`) before it exits; a collective that fails on a surviving rank (the peer's
connection closed, or the timeout) raises :class:`DistributedFailure`, whose message names the
ranks that reported an error and those that did not answer within a few seconds (killed or
crashed), instead of the backend's traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from chronograd._tree import tree_leaves, tree_unflatten
from chronograd.rules.base import Carry, LearningRule, PersistentCarry

R = TypeVar("R")
_ERROR_KEY = "chronograd/error/{}"
_ALIVE_KEY = "chronograd/alive/{}"
#: seconds a surviving rank waits for the others to report before naming the silent ones
GRACE_SECONDS = 3.0


class DistributedFailure(RuntimeError):
    """Another rank failed (raised, was killed, or stopped answering) during a collective."""


def _store() -> Any:
    from torch.distributed import distributed_c10d

    try:
        return distributed_c10d._get_default_store()
    except (RuntimeError, ValueError, AttributeError):
        return None


def note_failure(exc: BaseException) -> None:
    """Publish this rank's error to the other ranks (a no-op outside a process group)."""
    if isinstance(exc, DistributedFailure) or not (dist.is_available() and dist.is_initialized()):
        return
    store = _store()
    if store is None:
        return
    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
    with contextlib.suppress(Exception):  # the store (on rank 0) may be gone already
        store.set(_ERROR_KEY.format(dist.get_rank()), text)


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    note_failure(exc)
    _previous_hook(kind, exc, tb)


_previous_hook = sys.excepthook


def _describe(what: str, cause: BaseException) -> str:
    """One line: which ranks failed and why, as far as the store tells within the grace time."""
    me, world = dist.get_rank(), dist.get_world_size()
    store = _store()
    errors: dict[int, str] = {}
    silent = [r for r in range(world) if r != me]
    if store is not None:
        try:
            store.set(_ALIVE_KEY.format(me), "1")
            deadline = time.monotonic() + GRACE_SECONDS
            while True:
                silent = []
                for r in range(world):
                    if r == me:
                        continue
                    if store.check([_ERROR_KEY.format(r)]):
                        errors[r] = store.get(_ERROR_KEY.format(r)).decode(errors="replace")
                    elif not store.check([_ALIVE_KEY.format(r)]):
                        silent.append(r)
                if errors or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        except Exception:  # the store itself is unreachable: its host (rank 0) is gone
            silent = [0] if me != 0 else silent
    cause_text = _backend_message(cause)
    if errors:
        who = "; ".join(f"rank {r} failed: {m}" for r, m in sorted(errors.items()))
    elif silent:
        ranks = ", ".join(str(r) for r in silent)
        who = (
            f"rank {ranks} stopped answering (killed or crashed; see its log) "
            f"- the backend said: {cause_text}"
        )
    else:
        who = f"the backend failed: {cause_text}"
    return (
        f"distributed training stopped on rank {me} of {world} during {what}: {who}; "
        "fix the failing rank and restart (resume from the last checkpoint)"
    )


def _backend_message(cause: BaseException) -> str:
    """The backend's error, first sentence, without its source location: ``[pair.cc:553]
    Connection closed by peer [127.0.0.1]:32679. This is ...`` -> ``Connection closed by peer
    [127.0.0.1]:32679``."""
    text = " ".join(str(cause).split())
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text.split(". ")[0].rstrip(".")[:200] or type(cause).__name__


def _collective(what: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    try:
        return fn(*args, **kwargs)
    except RuntimeError as e:  # gloo / NCCL errors: DistBackendError, timeouts, resets
        if isinstance(e, DistributedFailure):
            raise
        raise DistributedFailure(_describe(what, e)) from e


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a process group."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0 (the one that writes files)."""
        return self.rank == 0


def setup(mode: bool | str | None, device: torch.device) -> DistributedContext | None:
    """Resolve the trainer's ``distributed=`` argument.

    ``"auto"``/``None``: use an initialised process group, or initialise one when launched by
    torchrun (``WORLD_SIZE > 1``); otherwise run alone. ``True``: require one. ``False``: alone.
    """
    if mode is False:
        return None
    if mode not in (None, True, "auto"):
        raise ValueError(f"distributed must be True, False or 'auto', got {mode!r}")
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not dist.is_available():
        if mode is True or launched:
            raise RuntimeError("torch.distributed is not available in this PyTorch build")
        return None
    if not dist.is_initialized():
        if not launched:
            if mode is True:
                raise ValueError(
                    "distributed=True but no process group: launch with torchrun (it sets "
                    "WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT) or call "
                    "torch.distributed.init_process_group first"
                )
            return None
        timeout = float(os.environ.get("CHRONOGRAD_DIST_TIMEOUT", "300"))
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
        # a group still alive at interpreter exit can abort the process ("terminate called
        # without an active exception"): the group chronograd created, it also destroys
        atexit.register(_destroy)
        if sys.excepthook is not _excepthook:  # an error on this rank is told to the others
            global _previous_hook
            _previous_hook = sys.excepthook
            sys.excepthook = _excepthook
    ctx = DistributedContext(dist.get_rank(), dist.get_world_size())
    return ctx if ctx.world_size > 1 else None


def start(
    mode: bool | str | None, device: torch.device, model: nn.Module
) -> DistributedContext | None:
    """:func:`setup`, then rank 0's parameters and buffers of ``model`` on every rank."""
    ctx = setup(mode, device)
    if ctx is not None:
        broadcast_module(model)
    return ctx


def _destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: nn.Module) -> None:
    """Make every rank's parameters and buffers equal to rank 0's."""
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            _collective("the weight broadcast", dist.broadcast, t.data, src=0)


def broadcast_tree(tree: Any) -> Any:
    """Rank 0's values of a tree of tensors (a rule's persistent carry)."""
    leaves = [t.clone() for t in tree_leaves(tree)]
    for t in leaves:
        _collective("the rule state broadcast", dist.broadcast, t, src=0)
    return tree_unflatten(tree, leaves)


def average(grads: Mapping[str, Tensor], weight: float) -> dict[str, Tensor]:
    """``Σ_r w_r g_r / Σ_r w_r`` over ranks, as one flattened all-reduce."""
    names = list(grads)
    if not names:
        return {}
    first = grads[names[0]]
    bucket = torch.cat(
        [grads[n].reshape(-1).to(first.dtype) * weight for n in names]
        + [torch.tensor([weight], dtype=first.dtype, device=first.device)]
    )
    _collective("the gradient average", dist.all_reduce, bucket)
    bucket = bucket[:-1] / bucket[-1]
    out, i = {}, 0
    for n in names:
        k = grads[n].numel()
        out[n] = bucket[i : i + k].view_as(grads[n]).to(grads[n].dtype)
        i += k
    return out


def reduce_sums(values: Mapping[str, float]) -> dict[str, float]:
    """Sum scalars across ranks (epoch totals: loss·samples, samples, metric sums)."""
    names = list(values)
    t = torch.tensor([float(values[n]) for n in names], dtype=torch.float64)
    _collective("the reduction of epoch sums", dist.all_reduce, t)
    return dict(zip(names, t.tolist()))


def shard(batches: Iterable[Any], ctx: DistributedContext) -> Iterator[Any]:
    """This rank's batches: batch ``i`` goes to rank ``i mod N``; an incomplete final group of
    ``N`` batches is dropped so every rank takes the same number of optimizer steps."""
    group: list[Any] = []
    for b in batches:
        group.append(b)
        if len(group) == ctx.world_size:
            yield group[ctx.rank]
            group = []


def rank_batches(
    batches: Iterable[Any], ctx: DistributedContext | None, shard_data: bool, epoch: int
) -> Iterable[Any]:
    """This rank's batches of ``batches`` (all of them when not distributed or not sharded).

    A DataLoader must shard itself with a ``DistributedSampler`` (its epoch is set here);
    other iterables are dealt round-robin by :func:`shard`.
    """
    if ctx is None or not shard_data:
        return batches
    if isinstance(batches, torch.utils.data.DataLoader):
        sampler = batches.sampler
        if not isinstance(sampler, torch.utils.data.DistributedSampler):
            raise ValueError(
                "in distributed mode a DataLoader needs a DistributedSampler: "
                "DataLoader(dataset, sampler=DistributedSampler(dataset), ...) (or pass "
                "shard=False if each rank's loader already yields its own data)"
            )
        sampler.set_epoch(epoch)
        return batches
    return shard(batches, ctx)


def shared_carry(
    ctx: DistributedContext | None, rule: LearningRule, model: nn.Module, carry: Carry
) -> Carry:
    """``carry`` with rank 0's persistent part (e.g. random feedback) on every rank (``carry``
    itself when not distributed)."""
    if ctx is None or not isinstance(rule, PersistentCarry):
        return carry
    persistent = rule.carry_state_dict(carry)
    if persistent is None:
        return carry
    return rule.load_carry_state_dict(model, broadcast_tree(persistent))
