"""Training: the trainer, its events, history, handlers and checkpoint files."""

from chronograd.training.checkpoint import UnsafeCheckpointError, load, save
from chronograd.training.events import Event, EventFilter
from chronograd.training.handlers import Checkpoint, EarlyStopping, ProgressBar
from chronograd.training.history import History
from chronograd.training.regularization import (
    RegularizerStep,
    dale_metrics,
    regularizer_metrics,
)
from chronograd.training.tensorboard import TensorBoardLogger
from chronograd.training.trainer import Trainer, TrainerState, TrainingInterrupted

__all__ = [
    "Checkpoint",
    "EarlyStopping",
    "Event",
    "EventFilter",
    "History",
    "ProgressBar",
    "RegularizerStep",
    "TensorBoardLogger",
    "Trainer",
    "TrainerState",
    "TrainingInterrupted",
    "UnsafeCheckpointError",
    "dale_metrics",
    "load",
    "regularizer_metrics",
    "save",
]
