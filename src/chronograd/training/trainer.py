"""The trainer: epochs and batches, events for observers, history, checkpoints.

::

    trainer = Trainer(model, BPTT(), Objective("cross_entropy", last=10), lr=1e-2,
                      metrics={"accuracy": accuracy})
    @trainer.on(Event.EPOCH_COMPLETED(every=5))
    def log(trainer): print(trainer.state.epoch, trainer.history.last("val_loss"))
    history = trainer.fit(train_batches, epochs=20, val=val_batches)

``train`` is a re-iterable of ``(x, y)`` batches (a list, a DataLoader) or a callable
``epoch -> batches`` (generated tasks: a fresh, seeded set per epoch). Batches go through the
rule's ``prepare_batch`` (device move) and its ``time_dim`` is moved to the front. The rule
owns time within a sequence; the trainer only applies what it returns (one optimizer step per
update) and fires events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from chronograd.cells.base import check_cell, param_like
from chronograd.constraints import check_constraints
from chronograd.objectives import Objective
from chronograd.regularizers import Regularizer
from chronograd.rules.base import LearningRule, PersistentCarry, RuleStep
from chronograd.rules.driver import SequenceResult, check_driver_options
from chronograd.sequence import Span, time_first, unroll
from chronograd.training import checkpoint as ckpt
from chronograd.training.apply import apply_to_model, run_sequence
from chronograd.training.data import default_prepare_batch
from chronograd.training.distributed import (
    DistributedContext,
    broadcast_module,
    broadcast_tree,
    rank_batches,
    reduce_sums,
)
from chronograd.training.distributed import setup as dist_setup
from chronograd.training.events import Event, EventFilter, as_filter, check_handler
from chronograd.training.history import History
from chronograd.training.resume import (
    EpochProgress,
    SignalGuard,
    capture_rng,
    load_trainer_state,
    restore_rng,
    trainer_state_dict,
)
from chronograd.transforms import GradientTransform

Metric = Callable[[Any, Any], "float | Tensor"]
Batches = Iterable[Any] | Callable[[int], Iterable[Any]]


@dataclass
class TrainerState:
    """Where the run is: counters, the current chunk, the last losses and metrics."""

    epoch: int = 0
    iteration: int = 0
    chunk: int = 0
    span: Span | None = None
    batch_loss: float = float("nan")
    chunk_loss: float = float("nan")
    metrics: dict[str, float] = field(default_factory=dict)
    terminate: bool = False


class Trainer:
    """Train ``model`` with ``rule`` on ``objective``.

    Args:
        model: a chronograd cell (typically a :class:`~chronograd.cells.Stack`).
        rule: a :class:`~chronograd.rules.LearningRule`.
        objective: what to minimise.
        optimizer: a ``torch.optim`` optimizer, a factory ``params -> optimizer``, or ``None``
            for Adam with ``lr`` over the rule's trained parameters (none for rules with
            ``needs_optimizer = False``, which update weights themselves, e.g. RLS).
            ``optimizer=False``: no optimizer.
        lr: learning rate of the default optimizer.
        scheduler: an LR scheduler or a factory ``optimizer -> scheduler``, stepped once per
            epoch (``ReduceLROnPlateau`` receives ``val_loss``, or the train loss without val).
        metrics: ``{name: fn(outputs, targets) -> float}`` averaged over batches (weighted by
            batch size) for validation (``val_<name>``) and training (``<name>``).
        device: where batches go (default: the model's device).
        progress: show a progress line on stderr.
        distributed: ``"auto"`` (default: data-parallel when launched by torchrun or when a
            process group is initialised), ``True`` (require it) or ``False``. See
            :mod:`chronograd.training.distributed`: gradients of every rule are averaged across
            ranks once per update, weights and persistent rule state are broadcast from rank 0,
            metrics are reduced, and only rank 0 writes files and progress.
        shard: in distributed mode, give each rank its share of the training data (batch ``i``
            to rank ``i mod N`` for lists and callables; a DataLoader must use a
            ``DistributedSampler``). ``False``: each rank's data is already its own.
        constraints: callables ``() -> None`` (e.g. :class:`~chronograd.constraints.DaleProjection`,
            ``NoAutapses``, ``SparsityMask``) applied in order after every update (optimizer step
            or direct update), for every rule.
        transform: a :class:`~chronograd.transforms.GradientTransform` applied to every
            gradient before the optimizer (``chain(ema(0.9), clip_by_global_norm(1.0))``).
        accumulate: sum the chunk gradients of a sequence and take one optimizer step at its
            end (default: one step per chunk).
        time_dim: time dimension of the batches (moved to 0).
        prepare_batch: ``(batch, device, non_blocking) -> (x, y)``; default splits a pair and
            moves it to ``device``.
        non_blocking: passed to ``prepare_batch`` for asynchronous host-to-device copies.

    Chronograd regularizers in ``objective.regularizers`` and constraint modules are moved to
    ``device``; a :class:`~chronograd.regularizers.Regularizer` of a parameter the rule does not
    train raises ``ValueError`` (its penalty would have no effect).

    Interruptions: during :meth:`fit`, SIGTERM and SIGINT finish the current batch, write a
    checkpoint to ``interrupt_checkpoint`` (set by :class:`~chronograd.training.Checkpoint`
    when attached, or by hand) and raise :class:`TrainingInterrupted`; a second signal stops at
    once. :meth:`resume` continues from any batch boundary exactly (data position included).
    """

    def __init__(
        self,
        model: nn.Module,
        rule: LearningRule,
        objective: Objective,
        optimizer: torch.optim.Optimizer
        | Callable[[Any], torch.optim.Optimizer]
        | bool
        | None = None,
        *,
        lr: float = 1e-3,
        scheduler: Any = None,
        metrics: Mapping[str, Metric] | None = None,
        device: torch.device | str | None = None,
        progress: bool = False,
        distributed: bool | str | None = "auto",
        shard: bool = True,
        constraints: Sequence[Callable[[], object]] = (),
        transform: GradientTransform | None = None,
        accumulate: bool = False,
        time_dim: int = 0,
        prepare_batch: Callable[..., tuple[Any, Any]] = default_prepare_batch,
        non_blocking: bool = False,
    ) -> None:
        check_cell(model, "model")
        if not isinstance(rule, LearningRule):
            raise TypeError(f"`rule` must be a chronograd LearningRule, got {type(rule).__name__}")
        if not isinstance(objective, Objective):
            raise TypeError(
                f"`objective` must be a chronograd Objective, got {type(objective).__name__}"
            )
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not isinstance(time_dim, int) or isinstance(time_dim, bool) or time_dim < 0:
            raise ValueError(f"time_dim must be a non-negative int, got {time_dim!r}")
        if not callable(prepare_batch):
            raise TypeError(
                "prepare_batch must be callable (batch, device, non_blocking) -> (x, y)"
            )
        check_driver_options(rule, accumulate, transform)
        self.transform, self.accumulate = transform, accumulate
        self.time_dim, self.prepare_batch, self.non_blocking = time_dim, prepare_batch, non_blocking
        self.model, self.rule, self.objective = model, rule, objective
        self.device = torch.device(device) if device is not None else param_like(model)[0]
        self.model.to(self.device)
        trained_named = rule.trained(model)
        trained = list(trained_named.values())
        _check_regularizers(objective, trained_named, rule)
        self.constraints = check_constraints(constraints)
        for m in (*objective.regularizers, *self.constraints):
            if isinstance(m, nn.Module):
                m.to(self.device)
        if optimizer is None and not rule.needs_optimizer:
            self.optimizer: torch.optim.Optimizer | None = None
        elif optimizer is None or optimizer is True:
            self.optimizer = torch.optim.Adam(trained, lr=lr)
        elif optimizer is False:
            self.optimizer = None
        elif isinstance(optimizer, torch.optim.Optimizer):
            self.optimizer = optimizer
        elif callable(optimizer):
            self.optimizer = optimizer(trained)
        else:
            raise TypeError(
                f"optimizer must be a torch optimizer, a factory or None, got {type(optimizer).__name__}"
            )
        if scheduler is not None and callable(scheduler) and not hasattr(scheduler, "step"):
            if self.optimizer is None:
                raise ValueError("a scheduler needs an optimizer")
            scheduler = scheduler(self.optimizer)
        self.scheduler = scheduler
        self.metrics = dict(metrics or {})
        for name, fn in self.metrics.items():
            if not callable(fn):
                raise TypeError(f"metric {name!r} must be callable (outputs, targets) -> float")
        self.state = TrainerState()
        self.history = History()
        self.carry: Any = None
        self.distributed: DistributedContext | None = None
        self._distributed_mode, self._shard = distributed, shard
        self.interrupt_checkpoint: Path | None = None
        self.progress: EpochProgress | None = None
        self._signals = SignalGuard()
        self.extra_state: dict[str, Any] = {}
        self._handlers: list[
            tuple[EventFilter, Callable[..., Any], tuple[Any, ...], dict[str, Any]]
        ] = []
        if progress:
            from chronograd.training.handlers import ProgressBar

            ProgressBar().attach(self)

    # -- events -------------------------------------------------------------------------------
    def on(
        self, event: Event | EventFilter, *args: Any, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``@trainer.on(Event.EPOCH_COMPLETED(every=5), *args)`` registers the function.

        The handler is called as ``handler(trainer, *args, **kwargs)`` (exception handlers get
        the exception after ``trainer``).
        """

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.add_handler(event, fn, *args, **kwargs)
            return fn

        return deco

    def add_handler(
        self, event: Event | EventFilter, handler: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Callable[..., Any]:
        """Register ``handler(trainer, *args, **kwargs)`` for ``event``.

        The signature is checked now: a handler that cannot take these arguments raises
        ``TypeError`` at registration, not in the middle of a run.
        """
        filt = as_filter(event)
        check_handler(handler, filt.event, args, kwargs)
        self._handlers.append((filt, handler, args, kwargs))
        return handler

    def register_state(self, name: str, obj: Any) -> None:
        """Save ``obj`` with the trainer's checkpoints and restore it on :meth:`resume`.

        For stateful objects that shape the run from its feedback (a task curriculum): ``obj``
        has ``state_dict()`` (plain values: numbers, strings, tensors, containers) and
        ``load_state_dict(state)``. Checkpoints keep it under ``"extra"[name]``.
        """
        if not (
            callable(getattr(obj, "state_dict", None))
            and callable(getattr(obj, "load_state_dict", None))
        ):
            raise TypeError(
                f"register_state needs an object with state_dict() and load_state_dict(), got "
                f"{type(obj).__name__}"
            )
        if name in self.extra_state:
            raise ValueError(f"a state named {name!r} is already registered with this trainer")
        self.extra_state[name] = obj

    def _count(self, event: Event) -> int:
        if event.name.startswith("EPOCH") or event is Event.VALIDATION_COMPLETED:
            return self.state.epoch
        if event.name.startswith("BATCH"):
            return self.state.iteration
        if event.name.startswith("CHUNK"):
            return self.state.chunk
        return 1

    def fire(self, event: Event, *extra: Any) -> None:
        count = self._count(event)
        for filt, fn, args, kwargs in list(self._handlers):
            if filt.event is event and filt.matches(count):
                fn(self, *extra, *args, **kwargs)

    def terminate(self) -> None:
        """Stop after the current batch (handlers call this, e.g. early stopping)."""
        self.state.terminate = True

    # -- data ---------------------------------------------------------------------------------
    def _batches(self, data: Batches, epoch: int, train: bool = True) -> Iterable[Any]:
        batches = data(epoch) if callable(data) and not hasattr(data, "__iter__") else data
        return rank_batches(batches, self.distributed, self._shard or not train, epoch)

    def _prepare(self, batch: Any) -> tuple[Tensor, Any]:
        x, y = self.prepare_batch(batch, self.device, self.non_blocking)
        return time_first(x, self.time_dim), time_first(y, self.time_dim)

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, train: Batches, epochs: int, val: Batches | None = None) -> History:
        """Train until epoch ``epochs`` (counting epochs already done when resumed)."""
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        for name, data in (("train", train), ("val", val)):
            # isinstance, not iter(data) is data: creating a DataLoader iterator draws a seed
            # from the global RNG, which would shift a resumed run's random stream.
            if data is not None and not callable(data) and isinstance(data, Iterator):
                raise ValueError(
                    f"{name} data is a one-shot iterator (it would be empty after the first "
                    "epoch); pass a list, a DataLoader, or a callable epoch -> batches"
                )
        self.state.terminate = False
        self.distributed = dist_setup(self._distributed_mode, self.device)
        if self.distributed is not None:
            broadcast_module(self.model)
        self._signals.install()
        try:
            self.fire(Event.STARTED)
            while (
                self.state.epoch < epochs or self.progress is not None
            ) and not self.state.terminate:
                self._epoch(train, val)
            self.fire(Event.COMPLETED)
        except Exception as e:
            if any(f.event is Event.EXCEPTION_RAISED for f, *_ in self._handlers):
                self.fire(Event.EXCEPTION_RAISED, e)
            raise
        finally:
            self._signals.restore()
        return self.history

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and progress (rank 0, or when not distributed)."""
        return self.distributed is None or self.distributed.is_main

    def _check_signal(self) -> None:
        self._signals.check(self.save_checkpoint, self.interrupt_checkpoint)

    def _epoch(self, train: Batches, val: Batches | None) -> None:
        prog, skip, resume_rng = self.progress, 0, None
        if prog is None:
            self.state.epoch += 1
            prog = self.progress = EpochProgress(rng=capture_rng())
            self.fire(Event.EPOCH_STARTED)
        elif prog.batches > 0:  # resuming inside an epoch: replay its data order, skip what is done
            skip, resume_rng = prog.batches, capture_rng()
            restore_rng(prog.rng)
        t0 = time.perf_counter() - prog.elapsed
        self.model.train()
        for i, batch in enumerate(self._batches(train, self.state.epoch)):
            if i < skip:
                if i == skip - 1 and resume_rng is not None:
                    restore_rng(resume_rng)
                continue
            x, y = self._prepare(batch)
            self.state.iteration += 1
            self.fire(Event.BATCH_STARTED)
            result = self._sequence(x, y)
            b = x.shape[1]
            prog.total += result.loss * b
            prog.samples += b
            prog.nonfinite += result.nonfinite
            for k, fn in self.metrics.items():
                prog.sums[k] = prog.sums.get(k, 0.0) + float(fn(result.outputs, y)) * b
            prog.batches += 1
            prog.elapsed = time.perf_counter() - t0
            self.state.batch_loss = result.loss
            self.fire(Event.BATCH_COMPLETED)
            self._check_signal()
            if self.state.terminate:
                break
        if prog.samples == 0:
            raise ValueError("the training data produced no batches this epoch")
        sums = {"total": prog.total, "samples": prog.samples, "nonfinite": prog.nonfinite,
                **{f"m:{k}": prog.sums.get(k, 0.0) for k in self.metrics}}  # fmt: skip
        if self.distributed is not None:
            sums = reduce_sums(sums)
        n = sums["samples"]
        record = {"loss": sums["total"] / n, **{k: sums[f"m:{k}"] / n for k in self.metrics}}
        record["nonfinite"] = float(sums["nonfinite"])
        if self.optimizer is not None:
            record["lr"] = float(self.optimizer.param_groups[0]["lr"])
        if val is not None:
            record.update({f"val_{k}": v for k, v in self.evaluate(val).items()})
        record["time"] = time.perf_counter() - t0
        self.progress = None
        self.history.append(self.state.epoch, **record)
        self.state.metrics = record
        if val is not None:
            self.fire(Event.VALIDATION_COMPLETED)
        if self.scheduler is not None:
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(record.get("val_loss", record["loss"]))
            else:
                self.scheduler.step()
        self.fire(Event.EPOCH_COMPLETED)
        self._check_signal()

    def _sequence(self, x: Tensor, y: Any) -> SequenceResult:
        state = self.model.init_state(x.shape[1], device=x.device, dtype=x.dtype)  # type: ignore[operator]
        rule = self.rule
        if self.carry is None:
            self.carry = rule.init(self.model, state)
            if self.distributed is not None and isinstance(rule, PersistentCarry):
                persistent = rule.carry_state_dict(self.carry)
                if persistent is not None:  # e.g. random feedback: rank 0's for every rank
                    self.carry = rule.load_carry_state_dict(self.model, broadcast_tree(persistent))

        def started(span: Span) -> None:
            self.state.chunk += 1
            self.state.span = span
            self.fire(Event.CHUNK_STARTED)

        def completed(span: Span, step: RuleStep) -> None:
            self.state.chunk_loss = float(step.loss)
            self.fire(Event.CHUNK_COMPLETED)

        apply = apply_to_model(
            self.model, self.optimizer, self.constraints, rule=rule, distributed=self.distributed
        )
        result = run_sequence(
            rule, self.model, x, y, self.objective, apply=apply, state=state,
            carry=self.carry, accumulate=self.accumulate, transform=self.transform,
            distributed=self.distributed, on_chunk_start=started, on_chunk_end=completed,
        )  # fmt: skip
        self.carry = result.carry
        return result

    @torch.no_grad()
    def evaluate(self, data: Batches) -> dict[str, float]:
        """Mean loss and metrics over ``data`` (no learning); keys ``loss`` and metric names."""
        self.model.eval()
        total, n, sums = 0.0, 0, dict.fromkeys(self.metrics, 0.0)
        for batch in self._batches(data, self.state.epoch, train=False):
            x, y = self._prepare(batch)
            outputs, _ = unroll(self.model, x)
            b = x.shape[1]
            total += float(self.objective.loss(outputs, y)) * b
            for k, fn in self.metrics.items():
                sums[k] += float(fn(outputs, y)) * b
            n += b
        self.model.train()
        if self.distributed is not None:
            red = reduce_sums({"total": total, "n": n, **{f"m:{k}": v for k, v in sums.items()}})
            total, n, sums = red["total"], int(red["n"]), {k: red[f"m:{k}"] for k in sums}
        if n == 0:
            raise ValueError("the validation data produced no batches")
        return {"loss": total / n, **{k: v / n for k, v in sums.items()}}

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly (weights_only-loadable)."""
        return trainer_state_dict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_trainer_state(self, state)

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write :meth:`state_dict` atomically to ``path`` (rank 0 only when distributed)."""
        if not self.is_main:
            return Path(path)
        return ckpt.save(self.state_dict(), path)

    def resume(self, path: str | Path) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint`; ``fit`` then continues the run."""
        self.load_state_dict(ckpt.load(path, map_location=self.device))


def _check_regularizers(
    objective: Objective, trained: Mapping[str, Tensor], rule: LearningRule
) -> None:
    """A regularizer of parameters the rule does not train would silently do nothing: raise."""
    ids = {id(p) for p in trained.values()}
    for r in objective.regularizers:
        if not isinstance(r, Regularizer):
            continue
        missing = [n for n, p in r.params.items() if id(p) not in ids]
        if missing:
            raise ValueError(
                f"regularizer {r.name} acts on {missing}, which {type(rule).__name__} does not "
                f"train (params={rule.params}), so its penalty would have no effect; regularize "
                "the model's trained parameters (e.g. dict(model.named_parameters())) or widen "
                "the rule's params"
            )
