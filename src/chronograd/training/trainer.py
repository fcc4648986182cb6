"""The trainer: epochs and batches, events for observers, history, checkpoints.

::

    trainer = Trainer(model, BPTT(), Objective("cross_entropy", last=10), lr=1e-2,
                      metrics={"accuracy": accuracy})
    @trainer.on(Event.EPOCH_COMPLETED(every=5))
    def log(trainer): print(trainer.state.epoch, trainer.history.last("val_loss"))
    history = trainer.fit(train_batches, epochs=20, val=val_batches)

``train`` is a re-iterable of ``(x, y)`` batches (a list, a DataLoader) or a callable
``epoch -> batches`` (generated tasks: a fresh, seeded set per epoch); batches go through
``prepare_batch`` (device move) and their ``time_dim`` is moved to the front. The rule owns
time within a sequence; the trainer applies what it returns (:mod:`~chronograd.training.apply`)
and fires events (:mod:`~chronograd.training.events`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from chronograd.cells.base import param_like
from chronograd.constraints import check_constraints
from chronograd.objectives import Objective
from chronograd.rules.base import LearningRule, RuleStep
from chronograd.rules.driver import SequenceResult
from chronograd.sequence import Span, time_first
from chronograd.training import checkpoint as ckpt
from chronograd.training import distributed as data_parallel
from chronograd.training import events, setup
from chronograd.training.apply import apply_to_model, run_sequence
from chronograd.training.data import Batches, default_prepare_batch, epoch_batches
from chronograd.training.evaluation import evaluate
from chronograd.training.events import Event, EventFilter, Handlers, TrainerState, event_count
from chronograd.training.handlers import ProgressBar, is_terminal
from chronograd.training.history import History
from chronograd.training.resume import (
    EpochProgress,
    SignalGuard,
    check_stateful,
    load_checkpoint,
    load_trainer_state,
    trainer_state_dict,
)
from chronograd.transforms import GradientTransform


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
        progress: ``None`` (default): a :class:`~chronograd.training.ProgressBar` on stderr
            when stderr is a terminal; ``True``: one always (one line per epoch into a log
            file or pipe); ``False``: none; or a ``ProgressBar`` to attach.
        verbose: ``False`` silences the progress bar (the same as ``progress=False``).
        distributed: ``"auto"`` (default: data-parallel when launched by torchrun or when a
            process group is initialised), ``True`` (require it) or ``False``; see
            :mod:`chronograd.training.distributed` (only rank 0 writes files and progress).
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

    Regularizer and constraint modules are moved to ``device``; a
    :class:`~chronograd.regularizers.Regularizer` of a parameter the rule does not train raises
    ``ValueError`` (its penalty would have no effect).

    Interruptions: during :meth:`fit`, SIGTERM and SIGINT finish the current batch, write a
    checkpoint to ``interrupt_checkpoint`` (set by :class:`~chronograd.training.Checkpoint`
    when attached, or by hand) and raise :class:`TrainingInterrupted`; a second signal stops at
    once. :meth:`resume` continues from any batch boundary exactly (data position included);
    see :mod:`chronograd.training.resume`.
    """

    def __init__(
        self,
        model: nn.Module,
        rule: LearningRule,
        objective: Objective,
        optimizer: setup.OptimizerArg = None,
        *,
        lr: float = 1e-3,
        scheduler: Any = None,
        metrics: Mapping[str, setup.Metric] | None = None,
        device: torch.device | str | None = None,
        progress: bool | ProgressBar | None = None,
        verbose: bool = True,
        distributed: bool | str | None = "auto",
        shard: bool = True,
        constraints: Sequence[Callable[[], object]] = (),
        transform: GradientTransform | None = None,
        accumulate: bool = False,
        time_dim: int = 0,
        prepare_batch: Callable[..., tuple[Any, Any]] = default_prepare_batch,
        non_blocking: bool = False,
    ) -> None:
        setup.check_arguments(model, rule, objective, lr, time_dim, prepare_batch, accumulate,
                              transform)  # fmt: skip
        self.transform, self.accumulate = transform, accumulate
        self.time_dim, self.prepare_batch, self.non_blocking = time_dim, prepare_batch, non_blocking
        self.model, self.rule, self.objective = model, rule, objective
        self.device = torch.device(device) if device is not None else param_like(model)[0]
        self.model.to(self.device)
        trained = rule.trained(model)
        setup.check_regularizers(objective, trained, rule)
        self.constraints = check_constraints(constraints)
        setup.move_modules((*objective.regularizers, *self.constraints), self.device)
        self.optimizer = setup.build_optimizer(optimizer, rule, list(trained.values()), lr)
        self.scheduler = setup.build_scheduler(scheduler, self.optimizer)
        self.metrics = setup.check_metrics(metrics)
        self.state, self.history = TrainerState(), History()
        self.carry: Any = None
        self.distributed: data_parallel.DistributedContext | None = None
        self._distributed_mode, self._shard = distributed, shard
        self.interrupt_checkpoint: Path | None = None
        self.progress: EpochProgress | None = None
        self.extra_state: dict[str, Any] = {}
        self._signals, self._handlers = SignalGuard(), Handlers()
        self._val_every = 1
        if progress is None:
            progress = is_terminal(sys.stderr)
        if verbose and progress is not False:
            (progress if isinstance(progress, ProgressBar) else ProgressBar()).attach(self)

    # -- events -------------------------------------------------------------------------------
    def on(self, event: Event | EventFilter, *args: Any, **kwargs: Any) -> events.Decorator:
        """Decorator: ``@trainer.on(Event.EPOCH_COMPLETED(every=5), *args)`` registers the function.

        The handler is called as ``handler(trainer, *args, **kwargs)`` (exception handlers get
        the exception after ``trainer``).
        """
        return self._handlers.on(event, *args, **kwargs)

    def add_handler(
        self, event: Event | EventFilter, handler: events.Handler, *args: Any, **kwargs: Any
    ) -> events.Handler:
        """Register ``handler(trainer, *args, **kwargs)`` for ``event``.

        The signature is checked now: a handler that cannot take these arguments raises
        ``TypeError`` at registration, not in the middle of a run.
        """
        return self._handlers.add(event, handler, *args, **kwargs)

    def fire(self, event: Event, *extra: Any) -> None:
        """Call the handlers of ``event`` whose filter matches the current count."""
        self._handlers.fire(event, event_count(event, self.state), self, *extra)

    def register_state(self, name: str, obj: Any) -> None:
        """Save ``obj`` with the trainer's checkpoints and restore it on :meth:`resume`.

        For stateful objects that shape the run from its feedback (a task curriculum): ``obj``
        has ``state_dict()`` (plain values: numbers, strings, tensors, containers) and
        ``load_state_dict(state)``. Checkpoints keep it under ``"extra"[name]``.
        """
        check_stateful(name, obj, self.extra_state)
        self.extra_state[name] = obj

    def terminate(self) -> None:
        """Stop after the current batch (handlers call this, e.g. early stopping)."""
        self.state.terminate = True

    def _batches(self, data: Batches, epoch: int, train: bool = True) -> Iterable[Any]:
        batches, shard = epoch_batches(data, epoch), self._shard or not train
        return data_parallel.rank_batches(batches, self.distributed, shard, epoch)

    def _prepare(self, batch: Any) -> tuple[Tensor, Any]:
        x, y = self.prepare_batch(batch, self.device, self.non_blocking)
        return time_first(x, self.time_dim), time_first(y, self.time_dim)

    # -- the loop -----------------------------------------------------------------------------
    def fit(
        self, train: Batches, epochs: int, val: Batches | None = None, *, val_every: int = 1
    ) -> History:
        """Train until epoch ``epochs`` (counting epochs already done when resumed); validate
        on ``val`` after every ``val_every``-th epoch and the last one."""
        setup.check_fit_arguments(epochs, train, val)
        if isinstance(val_every, bool) or not isinstance(val_every, int) or val_every < 1:
            raise ValueError(f"val_every must be a positive int (epochs), got {val_every!r}")
        self.state.terminate, self._val_every = False, val_every
        self.state.max_epochs = epochs
        self.state.epoch_length = len(train) if isinstance(train, Sized) else None
        self.distributed = data_parallel.start(self._distributed_mode, self.device, self.model)
        self._signals.install()
        try:
            self.fire(Event.STARTED)
            while (
                self.state.epoch < epochs or self.progress is not None
            ) and not self.state.terminate:
                self._epoch(train, val)
            self.fire(Event.COMPLETED)
        except Exception as e:
            self.fire(Event.EXCEPTION_RAISED, e)
            raise
        finally:
            self._signals.restore()
        return self.history

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and progress (rank 0, or when not distributed)."""
        return self.distributed is None or self.distributed.is_main

    def _epoch(self, train: Batches, val: Batches | None) -> None:
        prog = self.progress  # not None: resuming inside an epoch
        if prog is None:
            self.state.epoch += 1
            prog = self.progress = EpochProgress.start()
            self.fire(Event.EPOCH_STARTED)
        t0 = time.perf_counter() - prog.elapsed
        self.model.train()
        for batch in prog.remaining(lambda: self._batches(train, self.state.epoch)):
            x, y = self._prepare(batch)
            self.state.iteration += 1
            self.fire(Event.BATCH_STARTED)
            result = self._sequence(x, y)
            values = {k: float(fn(result.outputs, y)) for k, fn in self.metrics.items()}
            prog.add(result.loss, result.nonfinite, x.shape[1], values)
            prog.elapsed = time.perf_counter() - t0
            self.state.batch_loss = result.loss
            self.fire(Event.BATCH_COMPLETED)
            self._signals.check(self.save_checkpoint, self.interrupt_checkpoint)
            if self.state.terminate:
                break
        record = prog.means(list(self.metrics), self.distributed)
        if self.optimizer is not None:
            record["lr"] = float(self.optimizer.param_groups[0]["lr"])
        last = self.state.epoch >= self.state.max_epochs or self.state.terminate
        if val is not None and not (self.state.epoch % self._val_every and not last):
            record.update({f"val_{k}": v for k, v in self.evaluate(val).items()})
        record["time"] = time.perf_counter() - t0
        self.progress = None
        self.history.append(self.state.epoch, **record)
        self.state.metrics = record
        if any(k.startswith("val_") for k in record):
            self.fire(Event.VALIDATION_COMPLETED)
        setup.step_scheduler(self.scheduler, record)
        self.fire(Event.EPOCH_COMPLETED)
        self._signals.check(self.save_checkpoint, self.interrupt_checkpoint)

    def _sequence(self, x: Tensor, y: Any) -> SequenceResult:
        state = self.model.init_state(x.shape[1], device=x.device, dtype=x.dtype)  # type: ignore[operator]
        if self.carry is None:  # rank 0's persistent part (e.g. random feedback) on every rank
            carry = self.rule.init(self.model, state)
            self.carry = data_parallel.shared_carry(self.distributed, self.rule, self.model, carry)

        def started(span: Span) -> None:
            self.state.chunk += 1
            self.state.span = span
            self.fire(Event.CHUNK_STARTED)

        def completed(span: Span, step: RuleStep) -> None:
            self.state.chunk_loss = float(step.loss)
            self.fire(Event.CHUNK_COMPLETED)

        apply = apply_to_model(self.model, self.optimizer, self.constraints, rule=self.rule,
                               distributed=self.distributed)  # fmt: skip
        result = run_sequence(
            self.rule, self.model, x, y, self.objective, apply=apply, state=state,
            carry=self.carry, accumulate=self.accumulate, transform=self.transform,
            distributed=self.distributed, on_chunk_start=started, on_chunk_end=completed,
        )  # fmt: skip
        self.carry = result.carry
        return result

    @torch.no_grad()
    def evaluate(self, data: Batches) -> dict[str, float]:
        """Mean loss and metrics over ``data`` (no learning); keys ``loss`` and metric names."""
        batches = (self._prepare(b) for b in self._batches(data, self.state.epoch, train=False))
        return evaluate(self.model, self.objective, batches, self.metrics, self.distributed)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly (weights_only-loadable)."""
        return trainer_state_dict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (model, rule carry, optimizer, counters, RNG)."""
        load_trainer_state(self, state)

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write :meth:`state_dict` atomically to ``path`` (rank 0 only when distributed)."""
        if not self.is_main:
            return Path(path)
        return ckpt.save(self.state_dict(), path)

    def resume(self, path: str | Path) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint`; ``fit`` then continues the run.

        A damaged file (checksum mismatch, truncated) is refused before anything is loaded; when
        a :class:`~chronograd.training.Checkpoint` kept older files beside it, the newest
        intact one is used instead, with a warning (see :func:`resume.load_checkpoint`)."""
        self.load_state_dict(load_checkpoint(path, map_location=self.device)[0])
