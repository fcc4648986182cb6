"""Observers attached to trainer events: progress, early stopping, checkpoints."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from chronograd.training.events import Event
from chronograd.training.resume import previous


class ProgressBar:
    """Progress with live metrics on ``stream`` (default stderr); rank 0 only.

    On a terminal (``live=True``, the default when ``stream.isatty()``) one line is redrawn in
    place after every ``every``-th batch: epoch ``e/E``, a bar and ``i/N`` batches when the
    epoch's length is known (``total=``, or ``len()`` of the training data), the running mean
    loss and the batch rate; the epoch then ends with its summary line (train and validation
    metrics, time). Otherwise (a log file, a pipe) nothing is redrawn and no carriage return is
    written: one summary line per epoch.

    Args:
        stream: a text stream.
        every: redraw after every ``every``-th batch.
        total: batches per epoch, when the data cannot say (a callable source).
        live: redraw in place; default: whether ``stream`` is a terminal.
        width: characters of the bar.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        every: int = 1,
        *,
        total: int | None = None,
        live: bool | None = None,
        width: int = 20,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.every, self.total, self.width = every, total, width
        self.live = is_terminal(self.stream) if live is None else bool(live)
        self._batches, self._loss_sum, self._t0 = 0, 0.0, 0.0

    def attach(self, trainer: Any) -> ProgressBar:
        """Register the bar's epoch and batch handlers on ``trainer``; returns ``self``."""
        trainer.add_handler(Event.EPOCH_STARTED, self._epoch_started)
        trainer.add_handler(Event.BATCH_COMPLETED, self._batch)
        trainer.add_handler(Event.EPOCH_COMPLETED, self._epoch_completed)
        return self

    def _epoch_started(self, trainer: Any) -> None:
        self._batches, self._loss_sum, self._t0 = 0, 0.0, time.perf_counter()

    def _epoch_label(self, trainer: Any) -> str:
        epochs = trainer.state.max_epochs
        return f"epoch {trainer.state.epoch}" + (f"/{epochs}" if epochs else "")

    def line(self, trainer: Any) -> str:
        """The live line: epoch, bar, batches, running mean loss, rate."""
        total = self.total if self.total is not None else trainer.state.epoch_length
        n = self._batches
        if total:
            done = min(1.0, n / total)
            filled = int(done * self.width)
            bar = f" [{'#' * filled}{'.' * (self.width - filled)}] {n}/{total}"
        else:
            bar = f" batch {n}"
        rate = n / max(time.perf_counter() - self._t0, 1e-9)
        mean = self._loss_sum / max(n, 1)
        return f"{self._epoch_label(trainer)}{bar} loss {mean:.4f} ({rate:.1f} batch/s)"

    def _batch(self, trainer: Any) -> None:
        self._batches += 1
        self._loss_sum += trainer.state.batch_loss
        if not trainer.is_main or not self.live or self._batches % self.every:
            return
        self.stream.write("\r" + self.line(trainer) + "\x1b[K")
        self.stream.flush()

    def _epoch_completed(self, trainer: Any) -> None:
        if not trainer.is_main:
            return
        m = trainer.state.metrics
        parts = [f"{k} {v:.4g}" for k, v in m.items() if k != "time"]
        summary = f"{self._epoch_label(trainer)}: " + "  ".join(parts)
        summary += f"  ({m.get('time', 0):.1f}s)\n"
        self.stream.write(("\r" + summary[:-1] + "\x1b[K\n") if self.live else summary)
        self.stream.flush()


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, StringIO)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


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
        if self.monitor not in trainer.state.metrics:  # not measured this epoch (val_every)
            return
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

    ``epoch_files=False`` keeps no ``epoch_*.pt`` files: the latest state in ``last`` (another
    file name than ``last.pt`` if given) and the one before it, renamed to ``<last>.prev.pt``
    (the fallback when ``last`` is damaged), so each state is written once.
    """

    def __init__(
        self,
        directory: str | Path,
        every: int = 1,
        keep: int = 2,
        monitor: str | None = None,
        mode: str = "min",
        every_batches: int | None = None,
        *,
        epoch_files: bool = True,
        last: str = "last.pt",
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.directory = Path(directory)
        self.every, self.keep, self.monitor, self.mode = every, keep, monitor, mode
        self.every_batches, self.epoch_files, self.last = every_batches, epoch_files, last
        self.best = math.inf if mode == "min" else -math.inf
        self.saved: list[Path] = []

    def attach(self, trainer: Any) -> Checkpoint:
        """Save after epochs (and every ``every_batches`` batches); returns ``self``."""
        trainer.add_handler(Event.EPOCH_COMPLETED(every=self.every), self)
        if self.every_batches is not None:
            trainer.add_handler(Event.BATCH_COMPLETED(every=self.every_batches), self._batch)
        trainer.interrupt_checkpoint = self.directory / self.last
        return self

    def _batch(self, trainer: Any) -> None:
        trainer.save_checkpoint(self.directory / self.last)

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
        last = self.directory / self.last
        if self.epoch_files:
            path = self.directory / f"epoch_{trainer.state.epoch:05d}.pt"
            self.saved.append(trainer.save_checkpoint(path))
        elif last.is_file():  # the previous state stays, once, as the fallback
            os.replace(last, previous(last))
        trainer.save_checkpoint(last)
        while len(self.saved) > self.keep:
            old = self.saved.pop(0)
            if old.exists():
                old.unlink()
        if self.monitor is not None and self.monitor in trainer.history:
            v = trainer.history.last(self.monitor)
            if (v < self.best) if self.mode == "min" else (v > self.best):
                self.best = v
                trainer.save_checkpoint(self.directory / "best.pt")
