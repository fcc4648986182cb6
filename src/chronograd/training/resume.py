"""What a trainer needs to stop and continue exactly: its checkpoint state, the RNG states, the
unfinished part of an epoch, and the SIGTERM/SIGINT handling that writes a last checkpoint.

:func:`trainer_state_dict` and :func:`load_trainer_state` are the trainer's
``state_dict``/``load_state_dict``; every value is ``torch.load(weights_only=True)``-loadable.
"""

from __future__ import annotations

import random
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from chronograd.objectives import Objective
from chronograd.rules.base import LearningRule, PersistentCarry
from chronograd.training import checkpoint as ckpt
from chronograd.training.distributed import DistributedContext, reduce_sums
from chronograd.training.events import TrainerState
from chronograd.training.history import History

FORMAT = "chronograd.trainer/1"


class Resumable(Protocol):
    """What :func:`trainer_state_dict` and :func:`load_trainer_state` read and set (a
    :class:`~chronograd.training.Trainer`)."""

    carry: Any
    progress: EpochProgress | None

    @property
    def model(self) -> nn.Module:
        """The model being trained."""

    @property
    def rule(self) -> LearningRule:
        """The learning rule."""

    @property
    def objective(self) -> Objective:
        """The objective."""

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer (None for rules with direct updates)."""

    @property
    def scheduler(self) -> Any:
        """The learning-rate scheduler, if any."""

    @property
    def constraints(self) -> Sequence[object]:
        """The constraints applied after every update."""

    @property
    def state(self) -> TrainerState:
        """The trainer's counters (epoch, batch, chunk)."""

    @property
    def history(self) -> History:
        """The per-epoch history."""

    @property
    def extra_state(self) -> Mapping[str, Any]:
        """Objects registered with ``register_state``, by name."""


@dataclass
class EpochProgress:
    """The unfinished part of an epoch: enough to resume it exactly from a checkpoint."""

    rng: dict[str, Any]  # RNG states at the epoch's start (replays a shuffling loader's order)
    batches: int = 0
    total: float = 0.0
    samples: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    nonfinite: int = 0
    elapsed: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        """Position in the epoch, data RNG and partial sums, for mid-epoch resume."""
        return {"rng": self.rng, "batches": self.batches, "total": self.total, "samples": self.samples,
                "sums": dict(self.sums), "nonfinite": self.nonfinite, "elapsed": self.elapsed}  # fmt: skip

    @classmethod
    def start(cls) -> EpochProgress:
        """A new epoch, with the RNG states at its start."""
        return cls(rng=capture_rng())

    def add(self, loss: float, nonfinite: int, size: int, metrics: Mapping[str, float]) -> None:
        """Count a finished batch of ``size`` samples (``metrics``: its metric values)."""
        self.total += loss * size
        self.samples += size
        self.nonfinite += nonfinite
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * size
        self.batches += 1

    def remaining(self, batches: Callable[[], Iterable[Any]]) -> Iterator[Any]:
        """The batches of the epoch not done yet (the first ``self.batches`` are).

        Resuming inside an epoch replays its data order: the RNG states of the epoch's start
        are restored before ``batches()`` is called (a shuffling loader draws the same order),
        and the current ones are put back once the batches already done have been skipped.
        """
        skip = self.batches
        resume_rng = None
        if skip > 0:
            resume_rng = capture_rng()
            restore_rng(self.rng)
        for i, batch in enumerate(batches()):
            if i < skip:
                if i == skip - 1 and resume_rng is not None:
                    restore_rng(resume_rng)
                continue
            yield batch

    def means(
        self, names: Sequence[str], distributed: DistributedContext | None
    ) -> dict[str, float]:
        """The epoch's ``loss``, metric ``names`` (sample-weighted means) and ``nonfinite``
        count, summed over ranks first when ``distributed``."""
        if self.samples == 0:
            raise ValueError("the training data produced no batches this epoch")
        sums = {"total": self.total, "samples": self.samples, "nonfinite": self.nonfinite,
                **{f"m:{k}": self.sums.get(k, 0.0) for k in names}}  # fmt: skip
        if distributed is not None:
            sums = reduce_sums(sums)
        n = sums["samples"]
        record = {"loss": sums["total"] / n, **{k: sums[f"m:{k}"] / n for k in names}}
        record["nonfinite"] = float(sums["nonfinite"])
        return record


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :meth:`Trainer.fit` after a SIGTERM/SIGINT, once the current batch finished
    and (when a checkpoint path is set) the checkpoint was written."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        name = signal.Signals(signum).name
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint path set"
        super().__init__(f"training interrupted by {name}; {where}")
        self.signum, self.checkpoint = signum, checkpoint


class SignalGuard:
    """Records SIGTERM/SIGINT during ``fit`` (a second signal stops at once)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Catch SIGTERM/SIGINT so the current batch finishes (main thread only)."""
        self.signum = None
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: Any) -> None:
            if self.signum is not None:
                raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once")
            self.signum = signum

        self._previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore(self) -> None:
        """Put back the signal handlers that :meth:`install` replaced."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def check(self, save: Callable[[Path], object], path: Path | None) -> None:
        """After a signal: write the checkpoint to ``path`` (if set), raise TrainingInterrupted."""
        if self.signum is None:
            return
        if path is not None:
            save(path)
        raise TrainingInterrupted(self.signum, path)


def check_stateful(name: str, obj: Any, registered: Mapping[str, Any]) -> None:
    """Raise unless ``obj`` has ``state_dict()`` and ``load_state_dict()`` and ``name`` is new."""
    if not (
        callable(getattr(obj, "state_dict", None))
        and callable(getattr(obj, "load_state_dict", None))
    ):
        raise TypeError(
            f"register_state needs an object with state_dict() and load_state_dict(), got "
            f"{type(obj).__name__}"
        )
    if name in registered:
        raise ValueError(f"a state named {name!r} is already registered with this trainer")


def trainer_state_dict(trainer: Resumable) -> dict[str, Any]:
    """Everything needed to continue ``trainer``'s run exactly."""
    rule = trainer.rule if isinstance(trainer.rule, PersistentCarry) else None
    carry = None
    if rule is not None and trainer.carry is not None and rule.checkpointed("carry", "save"):
        carry = rule.carry_state_dict(trainer.carry)
    opt = trainer.optimizer
    save_opt = opt is not None and (rule is None or rule.checkpointed("optimizer", "save"))
    return {
        "format": FORMAT,
        "model": trainer.model.state_dict(),
        "optimizer": opt.state_dict() if save_opt else None,  # type: ignore[union-attr]
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "rule": carry,
        "trainer": {
            "epoch": trainer.state.epoch,
            "iteration": trainer.state.iteration,
            "chunk": trainer.state.chunk,
        },
        "history": trainer.history.state_dict(),
        "rng": capture_rng(),
        "progress": None if trainer.progress is None else trainer.progress.state_dict(),
        "regularizers": [_module_state(r) for r in trainer.objective.regularizers],
        "constraints": [_module_state(c) for c in trainer.constraints],
        "extra": {k: v.state_dict() for k, v in trainer.extra_state.items()},
    }


def load_trainer_state(trainer: Resumable, state: Mapping[str, Any]) -> None:
    """Restore ``trainer`` from :func:`trainer_state_dict`'s result."""
    if state.get("format") != FORMAT:
        raise ValueError(f"not a chronograd trainer checkpoint (format={state.get('format')!r})")
    extra = state.get("extra", {})
    if set(extra) != set(trainer.extra_state):
        raise ValueError(
            f"the checkpoint holds extra state {sorted(extra)} but this trainer has "
            f"{sorted(trainer.extra_state)} registered; attach the same handlers (e.g. "
            "task.attach(trainer)) before resuming"
        )
    rule = trainer.rule if isinstance(trainer.rule, PersistentCarry) else None
    trainer.model.load_state_dict(state["model"])
    load_opt = rule is None or rule.checkpointed("optimizer", "load")
    if trainer.optimizer is not None and state["optimizer"] is not None and load_opt:
        trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.scheduler is not None and state["scheduler"] is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
    rule_state = state.get("rule")
    if rule is None or rule_state is None or not rule.checkpointed("carry", "load"):
        trainer.carry = None  # rebuilt by rule.init at the next sequence
    else:
        trainer.carry = rule.load_carry_state_dict(trainer.model, rule_state)
    t = state["trainer"]
    trainer.state.epoch, trainer.state.iteration = t["epoch"], t["iteration"]
    trainer.state.chunk = t["chunk"]
    trainer.history.load_state_dict(state["history"])
    for k, obj in trainer.extra_state.items():
        obj.load_state_dict(extra[k])
    restore_rng(state["rng"])
    prog = state.get("progress")
    trainer.progress = None if prog is None else EpochProgress(**prog)
    for key, objs in (
        ("regularizers", trainer.objective.regularizers),
        ("constraints", trainer.constraints),
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


def previous(path: Path) -> Path:
    """Where :class:`~chronograd.training.Checkpoint` keeps the state before ``path``
    (``checkpoint.pt`` -> ``checkpoint.prev.pt``) when it writes no epoch files."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def fallbacks(path: Path) -> list[Path]:
    """The checkpoints kept beside ``path`` by :class:`~chronograd.training.Checkpoint` that
    can stand in for it, newest first: its ``.prev`` file, then every ``epoch_*.pt`` for
    ``last.pt``/``best.pt``, the earlier ones for ``epoch_N.pt``."""
    kept = sorted(path.parent.glob("epoch_*.pt"), reverse=True)
    if path.name.startswith("epoch_"):
        return [p for p in kept if p.name < path.name]
    prev = [previous(path)] if previous(path).is_file() else []
    return prev + [p for p in kept if p != path]


def load_checkpoint(path: str | Path, map_location: Any = None) -> tuple[Any, Path]:
    """Load checkpoint ``path``; when it is damaged (truncated or altered), the newest intact
    one of :func:`fallbacks` instead, with a ``UserWarning`` that says so.

    Returns:
        The loaded state and the path it came from.

    Raises:
        CorruptCheckpointError: ``path`` is damaged and no kept checkpoint can stand in.
    """
    path = Path(path)
    try:
        return ckpt.load(path, map_location=map_location), path
    except ckpt.CorruptCheckpointError as damaged:
        for other in fallbacks(path):
            try:
                state = ckpt.load(other, map_location=map_location)
            except ckpt.CorruptCheckpointError:
                continue
            warnings.warn(
                f"{damaged} -- resuming from {other}, the newest intact checkpoint kept "
                "beside it, instead",
                UserWarning,
                stacklevel=3,
            )
            return state, other
        raise


def capture_rng() -> dict[str, Any]:
    """The torch (CPU and CUDA) and Python RNG states, as weights_only-loadable tensors."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _py_rng_to_tensor()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: Mapping[str, Any]) -> None:
    """Restore the torch, Python (and CUDA) generator states saved in ``rng``."""
    torch.set_rng_state(rng["torch"])
    random.setstate(_py_rng_from_tensor(rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _module_state(obj: object) -> dict[str, Any] | None:
    """The state dict (reference buffers, signs, masks) of a regularizer or constraint module."""
    return dict(obj.state_dict()) if isinstance(obj, nn.Module) else None


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
