"""A length curriculum driven by training feedback (copy task).

The copy task's sampler reads :attr:`Curriculum.length` when it draws a batch; a handler on
the trainer's ``EPOCH_COMPLETED`` event moves it on::

    after each epoch:  if history[monitor] < threshold:  solved = length;  length += step

(capped at ``max_length``). This is the curriculum of Graves et al. (2014) and Mujika et al.
(2018), used for the copy task by Menick et al. (2021): start with short sequences and lengthen
them once the loss per character falls below a threshold (0.15 bits). The longest solved
length is the task's headline number.

Determinism and checkpoints: the state is two integers, updated only from the recorded
history, so a run is reproducible for a seed; :meth:`Curriculum.attach` registers the state
with the trainer (``Trainer.register_state``), so ``save_checkpoint`` / ``resume`` restore it
and a resumed run draws the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

import math
from typing import Any, final

from chronograd.training.events import Event


@final
class Curriculum:
    """The current sequence length and the longest one solved so far.

    Args:
        start: first length.
        max_length: the length is never raised above this.
        threshold: raise the length when ``monitor`` falls below it.
        monitor: the history key to watch (default: the validation bits per character,
            falling back to the training value when the run has no validation data).
        step: how much to raise the length by.

    Attributes:
        length: the length batches are drawn with now.
        solved: the longest length whose ``monitor`` fell below ``threshold`` (0: none yet).
    """

    def __init__(
        self,
        start: int = 1,
        max_length: int = 100,
        *,
        threshold: float = 0.15,
        monitor: str = "val_bits_per_char",
        step: int = 1,
    ) -> None:
        for name, v in (("start", start), ("max_length", max_length), ("step", step)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if max_length < start:
            raise ValueError(f"max_length ({max_length}) must be >= start ({start})")
        if not (isinstance(threshold, (int, float)) and threshold > 0):
            raise ValueError(f"threshold must be a positive number, got {threshold!r}")
        self.start, self.max_length, self.step = start, max_length, step
        self.threshold, self.monitor = float(threshold), monitor
        self.length, self.solved = start, 0

    def update(self, value: float) -> bool:
        """Feed the monitored value of one epoch; return True when the length was raised."""
        if math.isnan(value) or not value < self.threshold:
            return False
        self.solved = max(self.solved, self.length)
        if self.length >= self.max_length:
            return False
        self.length = min(self.max_length, self.length + self.step)
        return True

    # -- trainer wiring ----------------------------------------------------------------------
    def attach(self, trainer: Any) -> Curriculum:
        """Update after every epoch of ``trainer`` and save/restore with its checkpoints.

        Each epoch's history record gains ``curriculum_length`` (the length that epoch was
        trained on) and ``longest_solved``.
        """
        trainer.register_state("curriculum", self)
        trainer.add_handler(Event.EPOCH_COMPLETED, self._epoch_completed)
        return self

    def _epoch_completed(self, trainer: Any) -> None:
        history = trainer.history
        key = self.monitor
        if key not in history and key.startswith("val_") and key[4:] in history:
            key = key[4:]  # no validation data in this run: watch the training value
        if key not in history:
            raise KeyError(
                f"the curriculum monitors {self.monitor!r}, which is not in the history "
                f"({history.keys}); give the trainer the task's metric "
                "(metrics={task.metric.name: task.metric})"
            )
        trained_on = self.length
        self.update(history.last(key))
        history.update_last(curriculum_length=trained_on, longest_solved=self.solved)

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """The current length and solved count, for checkpoints."""
        return {"length": self.length, "solved": self.solved}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values (``ValueError``: a length out of range)."""
        length, solved = int(state["length"]), int(state["solved"])
        if not 1 <= length <= self.max_length:
            raise ValueError(
                f"checkpointed curriculum length {length} is outside [1, {self.max_length}]; "
                "build the task with the max_length of the run you resume"
            )
        self.length, self.solved = length, solved

    def __repr__(self) -> str:
        return (
            f"Curriculum(length={self.length}, solved={self.solved}, start={self.start}, "
            f"max_length={self.max_length}, threshold={self.threshold})"
        )
