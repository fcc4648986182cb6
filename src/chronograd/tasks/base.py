"""Tasks: seeded, lazily generated data with the matching objective and metric.

``chronograd.tasks.get(name, **options)`` returns a :class:`Task`. Data are generated batch by
batch from a ``torch.Generator`` seeded by ``(seed, split, epoch, batch index)``, so a task is
deterministic for a seed, never materialises a whole data set for long sequences, and a resumed
run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from chronograd.objectives import Objective
from chronograd.tasks.seeding import derive_seed

if TYPE_CHECKING:
    from chronograd.tasks.arrays import ArrayData
    from chronograd.tasks.curriculum import Curriculum

Sampler = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Metric:
    """A task metric: ``fn(outputs (T,B,O), targets) -> float``.

    Attributes:
        name: history key (``val_<name>`` in the trainer).
        fn: the function.
        higher_is_better: direction of improvement.
        chance: the trivial baseline's value (what predicting without learning gets).
    """

    name: str
    fn: Callable[[Any, Any], float]
    higher_is_better: bool
    chance: float

    def __call__(self, outputs: Any, targets: Any) -> float:
        return float(self.fn(outputs, targets))


@dataclass(frozen=True)
class Task:
    """A learning problem.

    Attributes:
        name: registry name.
        description: one line, with the source paper.
        input_size, output_size: features of ``x_t`` and of the model's output.
        seq_len: ``T`` of a sequence.
        objective: the matching :class:`~chronograd.objectives.Objective`.
        metric: the task metric.
        sample: ``(batch_size, generator) -> (x (T, B, I), y (T, B, ...))``.
        batch_size, batches_per_epoch, val_batches: data volume.
        seed: base seed.
        spiking: inputs are spike trains (0/1).
        suggested: hints for building a model (``cell``, ``hidden``, ``lr``, ``tau_out``...).
        data: for a finite data set (:class:`~chronograd.tasks.arrays.ArrayData`): an epoch is
            a seeded permutation of its training split and validation is its whole validation
            split; ``sample`` then draws random training examples (for :meth:`batch`).
        curriculum: a :class:`~chronograd.tasks.curriculum.Curriculum` the sampler reads
            (copy task); :meth:`attach` connects it to a trainer.
    """

    name: str
    description: str
    input_size: int
    output_size: int
    seq_len: int
    objective: Objective
    metric: Metric
    sample: Sampler
    batch_size: int = 32
    batches_per_epoch: int = 10
    val_batches: int = 4
    seed: int = 0
    spiking: bool = False
    suggested: dict[str, Any] = field(default_factory=dict)
    data: ArrayData | None = None
    curriculum: Curriculum | None = None

    def _batches(self, split: int, epoch: int, n: int) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(n):
            g = torch.Generator().manual_seed(derive_seed(self.seed, split, epoch, i))
            yield self.sample(self.batch_size, g)

    def train(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The training batches of ``epoch`` (fresh and seeded per epoch)."""
        if self.data is not None:
            return self.data.batches("train", epoch, self.batch_size, self.seed)
        return self._batches(0, epoch, self.batches_per_epoch)

    def val(self, epoch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """The validation batches (the same at every epoch)."""
        if self.data is not None:
            return self.data.batches("val", 0, self.batch_size, self.seed)
        return self._batches(1, 0, self.val_batches)

    def attach(self, trainer: Any) -> None:
        """Connect what the task needs from training to ``trainer`` (the copy curriculum).

        Call it before attaching checkpoint handlers, so that a checkpoint written at the end
        of an epoch holds the curriculum state after that epoch's update. A no-op for tasks
        without a curriculum.
        """
        if self.curriculum is not None:
            self.curriculum.attach(trainer)

    def batch(self, batch_size: int | None = None, seed: int = 0) -> tuple[Tensor, Tensor]:
        """One batch, for quick experiments and tests."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, 2, seed))
        return self.sample(batch_size or self.batch_size, g)


TASKS: dict[str, Callable[..., Task]] = {}


def register(name: str) -> Callable[[Callable[..., Task]], Callable[..., Task]]:
    """Decorator registering a task factory under ``name``."""

    def deco(factory: Callable[..., Task]) -> Callable[..., Task]:
        if name in TASKS:
            raise ValueError(f"a task named {name!r} is already registered")
        TASKS[name] = factory
        return factory

    return deco


def get(name: str, **options: Any) -> Task:
    """Build the task ``name`` with ``options`` (unknown options raise ``TypeError``)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}")
    return TASKS[name](**options)


def available() -> list[str]:
    """The names of the registered tasks, sorted."""
    return sorted(TASKS)


def poisson(rates: Tensor, g: torch.Generator) -> Tensor:
    """Spikes ``1[u < rate]`` per element with ``u ~ U(0, 1)`` (rates per step, in [0, 1])."""
    return (torch.rand(rates.shape, generator=g) < rates).to(torch.get_default_dtype())


ENCODINGS = ("spikes", "rates")


def encode(rates: Tensor, g: torch.Generator, encoding: str) -> Tensor:
    """The network input for firing probabilities ``rates``: Poisson spikes or the rates."""
    if encoding == "spikes":
        return poisson(rates, g)
    return rates.to(torch.get_default_dtype())


def check_encoding(encoding: Any) -> str:
    """Return ``encoding`` if it is one of ``ENCODINGS``, else raise ``ValueError``."""
    if encoding not in ENCODINGS:
        raise ValueError(
            f"encoding must be one of {ENCODINGS} (Poisson spike trains, or their firing "
            f"probabilities as analog input), got {encoding!r}"
        )
    return str(encoding)


def check_time_scale(time_scale: Any) -> float:
    """Return ``time_scale`` as a float in (0, 1]; ``TypeError`` / ``ValueError`` otherwise."""
    if isinstance(time_scale, bool) or not isinstance(time_scale, (int, float)):
        raise TypeError(f"time_scale must be a number in (0, 1], got {type(time_scale).__name__}")
    if not 0 < time_scale <= 1:
        raise ValueError(
            f"time_scale must lie in (0, 1] (1: the paper's 1 ms steps), got {time_scale}"
        )
    return float(time_scale)


def steps(ms: float, time_scale: float, name: str) -> int:
    """``round(ms · time_scale)`` steps, at least one."""
    n = round(ms * time_scale)
    if n < 1:
        raise ValueError(
            f"{name} = {ms} ms at time_scale={time_scale} is less than one step; raise "
            "time_scale or the duration"
        )
    return n


def rate_per_step(hz: float, time_scale: float) -> float:
    """Firing probability per step for ``hz`` at 1 ms steps shortened by ``time_scale``.

    The rate is divided by ``time_scale`` (capped at 1) so that an event keeps about the same
    number of spikes when its duration is scaled down.
    """
    if hz < 0:
        raise ValueError(f"firing rates must be >= 0 Hz, got {hz}")
    return min(1.0, hz / 1000.0 / time_scale)


def positive_int(name: str, v: Any) -> int:
    """Return ``v`` if it is an int >= 1, else raise ``ValueError`` naming ``name``."""
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v
