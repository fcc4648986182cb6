"""TensorBoard logging from the trainer (optional: needs the ``tensorboard`` package).

::

    from chronograd.training.tensorboard import TensorBoardLogger
    TensorBoardLogger("runs/tb").attach(trainer)     # then: tensorboard --logdir runs/tb

Scalars written:

* ``epoch/<key>`` at step ``epoch`` for every numeric value of the epoch's history record
  (``loss``, ``val_loss``, ``val_<metric>``, ``lr``, ``time``, and whatever handlers added);
* ``chunk/loss`` at the global chunk count after every ``chunk_every``-th chunk (the loss of
  one update window: a chunk for truncated and online rules, the sequence for BPTT);
* ``batch/loss`` at the global batch count after every ``batch_every``-th batch.

The writer is ``torch.utils.tensorboard.SummaryWriter(log_dir)``, created when the logger is;
any object with ``add_scalar(tag, value, global_step)``, ``flush()`` and ``close()`` may be
passed instead (another backend, or a fake in tests). The writer is flushed after each epoch
and closed when training completes or raises.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

from chronograd.training.events import Event


class ScalarWriter(Protocol):
    """What the logger needs from a writer (``SummaryWriter`` has it)."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int | None = None) -> Any:
        """Log ``scalar_value`` under ``tag`` at ``global_step``."""

    def flush(self) -> Any:
        """Write pending events."""

    def close(self) -> Any:
        """Flush and close the writer."""


def summary_writer(log_dir: str | Path) -> ScalarWriter:
    """``torch.utils.tensorboard.SummaryWriter(log_dir)``, or an ``ImportError`` saying what to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError(
            "TensorBoardLogger needs the `tensorboard` package, which is not installed "
            f"({e}). Install it with `pip install tensorboard`, or pass writer= an object with "
            "add_scalar(tag, value, step), flush() and close()."
        ) from e
    return SummaryWriter(log_dir=str(log_dir))


class TensorBoardLogger:
    """Log a trainer's history and losses to TensorBoard (see the module docstring).

    Args:
        log_dir: the run directory (ignored when ``writer`` is given).
        writer: a writer to use instead of a ``SummaryWriter``.
        chunk_every: log ``chunk/loss`` every this many chunks (``None``: never).
        batch_every: log ``batch/loss`` every this many batches (``None``: never).
    """

    def __init__(
        self,
        log_dir: str | Path | None = None,
        *,
        writer: ScalarWriter | None = None,
        chunk_every: int | None = 1,
        batch_every: int | None = 1,
    ) -> None:
        for name, v in (("chunk_every", chunk_every), ("batch_every", batch_every)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")
        if writer is None:
            if log_dir is None:
                raise ValueError("give log_dir (a directory for the event files) or writer=")
            writer = summary_writer(log_dir)
        for method in ("add_scalar", "flush", "close"):
            if not callable(getattr(writer, method, None)):
                raise TypeError(
                    f"writer must have add_scalar(tag, value, step), flush() and close(); "
                    f"{type(writer).__name__} has no {method}()"
                )
        self.writer = writer
        self.chunk_every, self.batch_every = chunk_every, batch_every

    def attach(self, trainer: Any) -> TensorBoardLogger:
        """Register the handlers on ``trainer``; returns ``self``."""
        trainer.add_handler(Event.EPOCH_COMPLETED, self.log_epoch)
        if self.chunk_every is not None:
            trainer.add_handler(Event.CHUNK_COMPLETED(every=self.chunk_every), self.log_chunk)
        if self.batch_every is not None:
            trainer.add_handler(Event.BATCH_COMPLETED(every=self.batch_every), self.log_batch)
        trainer.add_handler(Event.COMPLETED, self.close)
        trainer.add_handler(Event.EXCEPTION_RAISED, self._failed)
        return self

    def log_epoch(self, trainer: Any) -> None:
        """``epoch/<key>`` for every finite value of the latest history record."""
        record = trainer.history.records[-1]
        epoch = int(record["epoch"])
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{key}", float(value), epoch)
        self.writer.flush()

    def log_chunk(self, trainer: Any) -> None:
        """``chunk/loss`` of the update that just completed."""
        self.writer.add_scalar("chunk/loss", float(trainer.state.chunk_loss), trainer.state.chunk)

    def log_batch(self, trainer: Any) -> None:
        """``batch/loss`` (mean of the batch's chunk losses)."""
        self.writer.add_scalar(
            "batch/loss", float(trainer.state.batch_loss), trainer.state.iteration
        )

    def close(self, trainer: Any = None) -> None:
        """Flush and close the writer."""
        self.writer.flush()
        self.writer.close()

    def _failed(self, trainer: Any, exception: BaseException) -> None:
        self.close(trainer)
