"""Trainer events and filters (Ignite's ``Events`` API, small).

``@trainer.on(Event.EPOCH_COMPLETED(every=5))`` fires on epochs 5, 10, ...;
``Event.BATCH_COMPLETED(once=100)`` fires once, on the 100th batch. The counter of an event is
the epoch for epoch events, the global batch count for batch events and the global chunk count
for chunk events (Ignite's time-iteration events). Events are for observers only: logging,
checkpoints, early stopping, progress. They never change the algorithm.

:class:`Handlers` is the registry a trainer holds: ``trainer.on``/``add_handler``/``fire``
delegate to it, with the counts of :func:`event_count` read from the trainer's
:class:`TrainerState`.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, final

from chronograd.sequence import Span


class Event(enum.Enum):
    """Points of a training run where handlers are called with ``(trainer, *args)``."""

    STARTED = "started"
    EPOCH_STARTED = "epoch_started"
    BATCH_STARTED = "batch_started"
    CHUNK_STARTED = "chunk_started"
    CHUNK_COMPLETED = "chunk_completed"
    BATCH_COMPLETED = "batch_completed"
    VALIDATION_COMPLETED = "validation_completed"
    EPOCH_COMPLETED = "epoch_completed"
    COMPLETED = "completed"
    EXCEPTION_RAISED = "exception_raised"

    def __call__(self, *, every: int | None = None, once: int | None = None) -> EventFilter:
        return EventFilter(self, every=every, once=once)


@dataclass(frozen=True)
class EventFilter:
    """An event restricted to every ``every``-th occurrence, or to occurrence ``once`` only."""

    event: Event
    every: int | None = None
    once: int | None = None

    def __post_init__(self) -> None:
        if self.every is not None and self.once is not None:
            raise ValueError("give either every= or once=, not both")
        for name in ("every", "once"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name}= must be a positive int, got {v!r}")

    def matches(self, count: int) -> bool:
        """Whether the event's ``count``-th firing passes ``every`` / ``once``."""
        if self.every is not None:
            return count % self.every == 0
        if self.once is not None:
            return count == self.once
        return True


def as_filter(event: Event | EventFilter) -> EventFilter:
    """``event`` as an :class:`EventFilter` (a bare :class:`Event` fires every time)."""
    if isinstance(event, EventFilter):
        return event
    if isinstance(event, Event):
        return EventFilter(event)
    raise TypeError(f"expected an Event or Event.X(every=/once=), got {type(event).__name__}")


def check_handler(
    handler: Callable[..., Any], event: Event, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Raise ``TypeError`` now if ``handler`` cannot be called as the event will call it."""
    if not callable(handler):
        raise TypeError(f"handler for {event.name} must be callable, got {type(handler).__name__}")
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):  # builtins without a signature: accept
        return
    extra = ("exception",) if event is Event.EXCEPTION_RAISED else ()
    try:
        sig.bind("trainer", *extra, *args, **kwargs)
    except TypeError as e:
        expected = "(trainer, exception, *args)" if extra else "(trainer, *args)"
        raise TypeError(
            f"handler {getattr(handler, '__qualname__', handler)!r}{sig} cannot be called as "
            f"{expected} with args={args!r} kwargs={kwargs!r} for {event.name}: {e}"
        ) from None


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
    max_epochs: int = 0  # the ``epochs`` of the running fit
    epoch_length: int | None = None  # batches per epoch, when the training data has a len()


def event_count(event: Event, state: TrainerState) -> int:
    """The counter ``every=``/``once=`` test for ``event``: epoch, global batch or chunk."""
    if event.name.startswith("EPOCH") or event is Event.VALIDATION_COMPLETED:
        return state.epoch
    if event.name.startswith("BATCH"):
        return state.iteration
    if event.name.startswith("CHUNK"):
        return state.chunk
    return 1


Handler = Callable[..., Any]
Decorator = Callable[[Handler], Handler]
_Entry = tuple[EventFilter, Handler, tuple[Any, ...], dict[str, Any]]


@final
class Handlers:
    """Registered handlers, called in registration order."""

    def __init__(self) -> None:
        self._entries: list[_Entry] = []

    def add(
        self, event: Event | EventFilter, handler: Handler, *args: Any, **kwargs: Any
    ) -> Handler:
        """Register ``handler`` for ``event``; its signature is checked now (``TypeError``)."""
        filt = as_filter(event)
        check_handler(handler, filt.event, args, kwargs)
        self._entries.append((filt, handler, args, kwargs))
        return handler

    def on(self, event: Event | EventFilter, *args: Any, **kwargs: Any) -> Decorator:
        """Decorator form of :meth:`add`."""

        def deco(fn: Handler) -> Handler:
            self.add(event, fn, *args, **kwargs)
            return fn

        return deco

    def fire(self, event: Event, count: int, *first: Any) -> None:
        """Call every handler of ``event`` whose filter matches ``count`` as
        ``handler(*first, *args, **kwargs)`` (a handler may register others meanwhile)."""
        for filt, fn, args, kwargs in list(self._entries):
            if filt.event is event and filt.matches(count):
                fn(*first, *args, **kwargs)
