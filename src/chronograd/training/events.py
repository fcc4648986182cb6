"""Trainer events and filters (Ignite's ``Events`` API, small).

``@trainer.on(Event.EPOCH_COMPLETED(every=5))`` fires on epochs 5, 10, ...;
``Event.BATCH_COMPLETED(once=100)`` fires once, on the 100th batch. The counter of an event is
the epoch for epoch events, the global batch count for batch events and the global chunk count
for chunk events (Ignite's time-iteration events). Events are for observers only: logging,
checkpoints, early stopping, progress. They never change the algorithm.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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
        if self.every is not None:
            return count % self.every == 0
        if self.once is not None:
            return count == self.once
        return True


def as_filter(event: Event | EventFilter) -> EventFilter:
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
