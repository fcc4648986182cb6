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
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from chronograd.cells.base import check_cell, param_like
from chronograd.objectives import Objective
from chronograd.rules.base import LearningRule, RuleStep
from chronograd.rules.run import apply_to_model, run_sequence
from chronograd.sequence import Span, time_first, unroll
from chronograd.training import checkpoint as ckpt
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


class Trainer:
    """Train ``model`` with ``rule`` on ``objective``.

    Args:
        model: a chronograd cell (typically a :class:`~chronograd.cells.Stack`).
        rule: a :class:`~chronograd.rules.LearningRule`.
        objective: what to minimise.
        optimizer: a ``torch.optim`` optimizer, a factory ``params -> optimizer``, or ``None``
            for Adam with ``lr`` over the rule's trained parameters. Rules that update weights
            directly (RLS) need none: pass ``optimizer=False``.
        lr: learning rate of the default optimizer.
        scheduler: an LR scheduler or a factory ``optimizer -> scheduler``, stepped once per
            epoch (``ReduceLROnPlateau`` receives ``val_loss``, or the train loss without val).
        metrics: ``{name: fn(outputs, targets) -> float}`` averaged over batches (weighted by
            batch size) for validation (``val_<name>``) and training (``<name>``).
        device: where batches go (default: the model's device).
        progress: show a progress line on stderr.
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
        trained = list(rule.trained(model).values())
        if optimizer is None or optimizer is True:
            self.optimizer: torch.optim.Optimizer | None = torch.optim.Adam(trained, lr=lr)
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
        self._extra_state: dict[str, Any] = {}
        self._handlers: list[
            tuple[EventFilter, Callable[..., Any], tuple[Any, ...], dict[str, Any]]
        ] = []
        self._apply = apply_to_model(model, self.optimizer)
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
    def _batches(self, data: Batches, epoch: int) -> Iterable[Any]:
        if callable(data) and not hasattr(data, "__iter__"):
            return data(epoch)
        return data

    def _prepare(self, batch: Any) -> tuple[Tensor, Any]:
        x, y = self.rule.prepare_batch(batch, self.device, self.rule.non_blocking)
        return time_first(x, self.rule.time_dim), time_first(y, self.rule.time_dim)

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, train: Batches, epochs: int, val: Batches | None = None) -> History:
        """Train until epoch ``epochs`` (counting epochs already done when resumed)."""
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        for name, data in (("train", train), ("val", val)):
            if data is not None and not callable(data) and iter(data) is data:
                raise ValueError(
                    f"{name} data is a one-shot iterator (it would be empty after the first "
                    "epoch); pass a list, a DataLoader, or a callable epoch -> batches"
                )
        self.state.terminate = False
        try:
            self.fire(Event.STARTED)
            while self.state.epoch < epochs and not self.state.terminate:
                self._epoch(train, val)
            self.fire(Event.COMPLETED)
        except Exception as e:
            if any(f.event is Event.EXCEPTION_RAISED for f, *_ in self._handlers):
                self.fire(Event.EXCEPTION_RAISED, e)
            raise
        return self.history

    def _epoch(self, train: Batches, val: Batches | None) -> None:
        self.state.epoch += 1
        t0 = time.perf_counter()
        self.fire(Event.EPOCH_STARTED)
        self.model.train()
        total, n, sums = 0.0, 0, dict.fromkeys(self.metrics, 0.0)
        for batch in self._batches(train, self.state.epoch):
            x, y = self._prepare(batch)
            self.state.iteration += 1
            self.fire(Event.BATCH_STARTED)
            result = self._sequence(x, y)
            b = x.shape[1]
            total += result.loss * b
            n += b
            for k, fn in self.metrics.items():
                sums[k] += float(fn(result.outputs, y)) * b
            self.state.batch_loss = result.loss
            self.fire(Event.BATCH_COMPLETED)
            if self.state.terminate:
                break
        if n == 0:
            raise ValueError("the training data produced no batches this epoch")
        record: dict[str, float] = {"loss": total / n, **{k: v / n for k, v in sums.items()}}
        if self.optimizer is not None:
            record["lr"] = float(self.optimizer.param_groups[0]["lr"])
        if val is not None:
            record.update({f"val_{k}": v for k, v in self.evaluate(val).items()})
        record["time"] = time.perf_counter() - t0
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

    def _sequence(self, x: Tensor, y: Any) -> Any:
        state = self.model.init_state(x.shape[1], device=x.device, dtype=x.dtype)  # type: ignore[operator]
        if self.carry is None:
            self.carry = self.rule.init(self.model, state)

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
        for batch in self._batches(data, self.state.epoch):
            x, y = self._prepare(batch)
            outputs, _ = unroll(self.model, x)
            b = x.shape[1]
            total += float(self.objective.loss(outputs, y)) * b
            for k, fn in self.metrics.items():
                sums[k] += float(fn(outputs, y)) * b
            n += b
        self.model.train()
        if n == 0:
            raise ValueError("the validation data produced no batches")
        return {"loss": total / n, **{k: v / n for k, v in sums.items()}}

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly (weights_only-loadable)."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _py_rng_to_tensor()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        carry = self.rule.carry_state_dict(self.carry) if self.carry is not None else None
        return {
            "format": "chronograd.trainer/1",
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rule": carry,
            "trainer": {
                "epoch": self.state.epoch,
                "iteration": self.state.iteration,
                "chunk": self.state.chunk,
            },
            "history": self.history.state_dict(),
            "rng": rng,
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
        if self.optimizer is not None and state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        rule_state = state.get("rule")
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
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(_py_rng_from_tensor(state["rng"]["python"]))
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write :meth:`state_dict` atomically to ``path``."""
        return ckpt.save(self.state_dict(), path)

    def resume(self, path: str | Path) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint`; ``fit`` then continues the run."""
        self.load_state_dict(ckpt.load(path, map_location=self.device))


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
