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

import random
import signal
import threading
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
from chronograd.rules.base import LearningRule, RuleStep
from chronograd.rules.run import apply_to_model, run_sequence
from chronograd.sequence import Span, time_first, unroll
from chronograd.training import checkpoint as ckpt
from chronograd.training.distributed import (
    DistributedContext,
    average,
    broadcast_module,
    broadcast_tree,
    reduce_sums,
    set_active,
    shard,
)
from chronograd.training.distributed import setup as dist_setup
from chronograd.training.events import Event, EventFilter, as_filter, check_handler
from chronograd.training.history import History

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


@dataclass
class _EpochProgress:
    """The unfinished part of an epoch: enough to resume it exactly from a checkpoint."""

    rng: dict[str, Any]  # RNG states at the epoch's start (replays a shuffling loader's order)
    batches: int = 0
    total: float = 0.0
    samples: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    nonfinite: int = 0
    elapsed: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng, "batches": self.batches, "total": self.total, "samples": self.samples,
                "sums": dict(self.sums), "nonfinite": self.nonfinite, "elapsed": self.elapsed}  # fmt: skip


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :meth:`Trainer.fit` after a SIGTERM/SIGINT, once the current batch finished
    and (when a checkpoint path is set) the checkpoint was written."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        name = signal.Signals(signum).name
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint path set"
        super().__init__(f"training interrupted by {name}; {where}")
        self.signum, self.checkpoint = signum, checkpoint


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
        self._local_batch = 0
        self.interrupt_checkpoint: Path | None = None
        self._progress: _EpochProgress | None = None
        self._signal: int | None = None
        self._extra_state: dict[str, Any] = {}
        self._handlers: list[
            tuple[EventFilter, Callable[..., Any], tuple[Any, ...], dict[str, Any]]
        ] = []
        self._apply_local = apply_to_model(model, self.optimizer, self.constraints)
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
        if name in self._extra_state:
            raise ValueError(f"a state named {name!r} is already registered with this trainer")
        self._extra_state[name] = obj

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
        ctx = self.distributed
        if ctx is None or (train and not self._shard):
            return batches
        sampler = getattr(batches, "sampler", None)
        if isinstance(batches, torch.utils.data.DataLoader):
            if not isinstance(sampler, torch.utils.data.DistributedSampler):
                raise ValueError(
                    "in distributed mode a DataLoader needs a DistributedSampler: "
                    "DataLoader(dataset, sampler=DistributedSampler(dataset), ...) (or pass "
                    "shard=False if each rank's loader already yields its own data)"
                )
            sampler.set_epoch(epoch)
            return batches
        return shard(batches, ctx)

    def _prepare(self, batch: Any) -> tuple[Tensor, Any]:
        x, y = self.rule.prepare_batch(batch, self.device, self.rule.non_blocking)
        return time_first(x, self.rule.time_dim), time_first(y, self.rule.time_dim)

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
        self._signal = None
        self.distributed = dist_setup(self._distributed_mode, self.device)
        set_active(self.distributed)
        if self.distributed is not None:
            broadcast_module(self.model)
        previous = self._install_signal_handlers()
        try:
            self.fire(Event.STARTED)
            while (
                self.state.epoch < epochs or self._progress is not None
            ) and not self.state.terminate:
                self._epoch(train, val)
            self.fire(Event.COMPLETED)
        except Exception as e:
            if any(f.event is Event.EXCEPTION_RAISED for f, *_ in self._handlers):
                self.fire(Event.EXCEPTION_RAISED, e)
            raise
        finally:
            set_active(None)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.history

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and progress (rank 0, or when not distributed)."""
        return self.distributed is None or self.distributed.is_main

    def _apply(self, grads: Any, updates: Any) -> None:
        ctx = self.distributed
        if ctx is not None:
            if updates and not getattr(self.rule, "distributed_updates", False):
                raise ValueError(
                    f"{type(self.rule).__name__} updates weights directly, and averaging those "
                    "updates across ranks is not the full-batch update; train it in a single "
                    "process (distributed=False)"
                )
            grads = average(grads, float(self._local_batch))
        self._apply_local(grads, updates)

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: Any) -> None:
            if self._signal is not None:  # a second signal: stop now
                raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once")
            self._signal = signum

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _check_signal(self) -> None:
        if self._signal is None:
            return
        path = self.interrupt_checkpoint
        if path is not None:
            self.save_checkpoint(path)
        raise TrainingInterrupted(self._signal, path)

    def _epoch(self, train: Batches, val: Batches | None) -> None:
        prog, skip, resume_rng = self._progress, 0, None
        if prog is None:
            self.state.epoch += 1
            prog = self._progress = _EpochProgress(rng=_capture_rng())
            self.fire(Event.EPOCH_STARTED)
        elif prog.batches > 0:  # resuming inside an epoch: replay its data order, skip what is done
            skip, resume_rng = prog.batches, _capture_rng()
            _restore_rng(prog.rng)
        t0 = time.perf_counter() - prog.elapsed
        self.model.train()
        for i, batch in enumerate(self._batches(train, self.state.epoch)):
            if i < skip:
                if i == skip - 1 and resume_rng is not None:
                    _restore_rng(resume_rng)
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
        record: dict[str, float] = {
            "loss": sums["total"] / n,
            **{k: sums[f"m:{k}"] / n for k in self.metrics},
        }
        record["nonfinite"] = float(sums["nonfinite"])
        if self.optimizer is not None:
            record["lr"] = float(self.optimizer.param_groups[0]["lr"])
        if val is not None:
            record.update({f"val_{k}": v for k, v in self.evaluate(val).items()})
        record["time"] = time.perf_counter() - t0
        self._progress = None
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

    def _sequence(self, x: Tensor, y: Any) -> Any:
        state = self.model.init_state(x.shape[1], device=x.device, dtype=x.dtype)  # type: ignore[operator]
        if self.carry is None:
            self.carry = self.rule.init(self.model, state)
            persistent = self.rule.carry_state_dict(self.carry) if self.distributed else None
            if persistent is not None:
                self.carry = self.rule.load_carry_state_dict(self.model, broadcast_tree(persistent))
        self._local_batch = x.shape[1]

        def started(span: Span) -> None:
            self.state.chunk += 1
            self.state.span = span
            self.fire(Event.CHUNK_STARTED)

        def completed(span: Span, step: RuleStep) -> None:
            self.state.chunk_loss = float(step.loss)
            self.fire(Event.CHUNK_COMPLETED)

        result = run_sequence(
            self.rule, self.model, x, y, self.objective, state=state, carry=self.carry,
            apply=self._apply, on_chunk_start=started, on_chunk_end=completed,
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
        rule = self.rule
        carry = (
            rule.carry_state_dict(self.carry)
            if self.carry is not None and rule.checkpointed("carry", "save")
            else None
        )
        save_opt = self.optimizer is not None and rule.checkpointed("optimizer", "save")
        return {
            "format": "chronograd.trainer/1",
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if save_opt else None,  # type: ignore[union-attr]
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rule": carry,
            "trainer": {
                "epoch": self.state.epoch,
                "iteration": self.state.iteration,
                "chunk": self.state.chunk,
            },
            "history": self.history.state_dict(),
            "rng": _capture_rng(),
            "progress": None if self._progress is None else self._progress.state_dict(),
            "regularizers": [_module_state(r) for r in self.objective.regularizers],
            "constraints": [_module_state(c) for c in self.constraints],
            "extra": {k: v.state_dict() for k, v in self._extra_state.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != "chronograd.trainer/1":
            raise ValueError(
                f"not a chronograd trainer checkpoint (format={state.get('format')!r})"
            )
        extra = state.get("extra", {})
        if set(extra) != set(self._extra_state):
            raise ValueError(
                f"the checkpoint holds extra state {sorted(extra)} but this trainer has "
                f"{sorted(self._extra_state)} registered; attach the same handlers (e.g. "
                "task.attach(trainer)) before resuming"
            )
        self.model.load_state_dict(state["model"])
        if (
            self.optimizer is not None
            and state["optimizer"] is not None
            and self.rule.checkpointed("optimizer", "load")
        ):
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        rule_state = state.get("rule")
        if not self.rule.checkpointed("carry", "load"):
            rule_state = None  # rebuilt by rule.init at the next sequence
        self.carry = (
            None if rule_state is None else self.rule.load_carry_state_dict(self.model, rule_state)
        )
        t = state["trainer"]
        self.state.epoch, self.state.iteration, self.state.chunk = (
            t["epoch"],
            t["iteration"],
            t["chunk"],
        )
        self.history.load_state_dict(state["history"])
        for k, obj in self._extra_state.items():
            obj.load_state_dict(extra[k])
        _restore_rng(state["rng"])
        prog = state.get("progress")
        self._progress = None if prog is None else _EpochProgress(**prog)
        for key, objs in (
            ("regularizers", self.objective.regularizers),
            ("constraints", self.constraints),
        ):
            saved = state.get(key)
            if saved is None:
                continue
            if len(saved) != len(objs):
                raise ValueError(
                    f"the checkpoint has {len(saved)} {key}, this trainer {len(objs)}; build the "
                    f"trainer with the same {key} to resume"
                )
            for obj, sd in zip(objs, saved):
                if sd is not None and isinstance(obj, nn.Module):
                    obj.load_state_dict(sd)

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write :meth:`state_dict` atomically to ``path`` (rank 0 only when distributed)."""
        if not self.is_main:
            return Path(path)
        return ckpt.save(self.state_dict(), path)

    def resume(self, path: str | Path) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint`; ``fit`` then continues the run."""
        self.load_state_dict(ckpt.load(path, map_location=self.device))


def _capture_rng() -> dict[str, Any]:
    """The torch (CPU and CUDA) and Python RNG states, as weights_only-loadable tensors."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _py_rng_to_tensor()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _restore_rng(rng: Mapping[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(_py_rng_from_tensor(rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _module_state(obj: object) -> dict[str, Any] | None:
    """The state dict (reference buffers, signs, masks) of a regularizer or constraint module."""
    return dict(obj.state_dict()) if isinstance(obj, nn.Module) else None


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


def _py_rng_to_tensor() -> dict[str, Tensor]:
    version, internal, gauss = random.getstate()
    return {
        "state": torch.tensor([version, *internal], dtype=torch.int64),
        "gauss": torch.tensor(float("nan") if gauss is None else gauss, dtype=torch.float64),
    }


def _py_rng_from_tensor(t: dict[str, Tensor]) -> tuple[Any, ...]:
    vals = [int(v) for v in t["state"].tolist()]
    g = float(t["gauss"])
    return (vals[0], tuple(vals[1:]), None if g != g else g)
