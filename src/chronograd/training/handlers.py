"""Observers attached to trainer events: progress, early stopping, checkpoints."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import IO, Any

from chronograd.training.events import Event


class ProgressBar:
    """A one-line progress display per epoch on ``stream`` (stderr), then the epoch summary."""

    def __init__(self, stream: IO[str] | None = None, every: int = 1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self._batches = 0
        self._epochs: int | None = None

    def attach(self, trainer: Any) -> ProgressBar:
        """Register the bar's epoch and batch handlers on ``trainer``; returns ``self``."""
        trainer.add_handler(Event.EPOCH_STARTED, self._epoch_started)
        trainer.add_handler(Event.BATCH_COMPLETED(every=self.every), self._batch)
        trainer.add_handler(Event.EPOCH_COMPLETED, self._epoch_completed)
        return self

    def _epoch_started(self, trainer: Any) -> None:
        self._batches = 0

    def _batch(self, trainer: Any) -> None:
        self._batches += self.every
        if not trainer.is_main:
            return
        self.stream.write(
            f"\repoch {trainer.state.epoch} batch {self._batches} loss {trainer.state.batch_loss:.4f}   "
        )
        self.stream.flush()

    def _epoch_completed(self, trainer: Any) -> None:
        if not trainer.is_main:
            return
        m = trainer.state.metrics
        parts = [f"{k} {v:.4g}" for k, v in m.items() if k not in ("time",)]
        self.stream.write(
            f"\repoch {trainer.state.epoch}: " + "  ".join(parts) + f"  ({m.get('time', 0):.1f}s)\n"
        )
        self.stream.flush()


class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Args:
        monitor: a history key (default ``val_loss``).
        patience: epochs without improvement before stopping.
        mode: ``"min"`` or ``"max"``.
        min_delta: the least change that counts as an improvement.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        mode: str = "min",
        min_delta: float = 0.0,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, min_delta
        self.best = math.inf if mode == "min" else -math.inf
        self.bad_epochs = 0

    def attach(self, trainer: Any) -> EarlyStopping:
        """Run after every epoch of ``trainer``; returns ``self``."""
        trainer.add_handler(Event.EPOCH_COMPLETED, self)
        return self

    def __call__(self, trainer: Any) -> None:
        if self.monitor not in trainer.history:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r}, which is not in the history ({trainer.history.keys})"
            )
        value = trainer.history.last(self.monitor)
        better = (
            value < self.best - self.min_delta
            if self.mode == "min"
            else value > self.best + self.min_delta
        )
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                trainer.terminate()


class Checkpoint:
    """Save the trainer every ``every`` epochs to ``directory``, keeping the last ``keep`` files,
    and the best one by ``monitor`` as ``best.pt`` when ``monitor`` is given.

    ``every_batches=n`` also writes ``last.pt`` every ``n`` batches (a run killed mid-epoch
    resumes from its last batch boundary). Attaching makes ``last.pt`` the trainer's
    ``interrupt_checkpoint`` (written on SIGTERM/SIGINT). :meth:`resume` continues from the
    newest intact file of the directory (a damaged ``last.pt`` falls back to a kept epoch file).
    """

    def __init__(
        self,
        directory: str | Path,
        every: int = 1,
        keep: int = 2,
        monitor: str | None = None,
        mode: str = "min",
        every_batches: int | None = None,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.directory = Path(directory)
        self.every, self.keep, self.monitor, self.mode = every, keep, monitor, mode
        self.every_batches = every_batches
        self.best = math.inf if mode == "min" else -math.inf
        self.saved: list[Path] = []

    def attach(self, trainer: Any) -> Checkpoint:
        """Save after epochs (and every ``every_batches`` batches); returns ``self``."""
        trainer.add_handler(Event.EPOCH_COMPLETED(every=self.every), self)
        if self.every_batches is not None:
            trainer.add_handler(Event.BATCH_COMPLETED(every=self.every_batches), self._batch)
        trainer.interrupt_checkpoint = self.directory / "last.pt"
        return self

    def _batch(self, trainer: Any) -> None:
        trainer.save_checkpoint(self.directory / "last.pt")

    def resume(self, trainer: Any) -> Path | None:
        """Continue ``trainer`` from this directory's newest intact checkpoint: ``last.pt``, or
        when it is damaged the newest kept ``epoch_*.pt`` (with a warning saying so).

        Returns:
            The file resumed from, or None when the directory holds no checkpoint yet.
        """
        from chronograd.training.resume import load_checkpoint

        last = self.directory / "last.pt"
        if not last.is_file():
            kept = sorted(self.directory.glob("epoch_*.pt"))
            if not kept:
                return None
            last = kept[-1]
        state, used = load_checkpoint(last, map_location=trainer.device)
        trainer.load_state_dict(state)
        return used

    def __call__(self, trainer: Any) -> None:
        if not trainer.is_main:
            return
        path = trainer.save_checkpoint(self.directory / f"epoch_{trainer.state.epoch:05d}.pt")
        self.saved.append(path)
        trainer.save_checkpoint(self.directory / "last.pt")
        while len(self.saved) > self.keep:
            old = self.saved.pop(0)
            if old.exists():
                old.unlink()
        if self.monitor is not None and self.monitor in trainer.history:
            v = trainer.history.last(self.monitor)
            if (v < self.best) if self.mode == "min" else (v > self.best):
                self.best = v
                trainer.save_checkpoint(self.directory / "best.pt")
