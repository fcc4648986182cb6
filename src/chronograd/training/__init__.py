"""Training: the trainer, its events, history, handlers and checkpoint files."""

from chronograd.training.apply import apply_to_model, run_sequence
from chronograd.training.checkpoint import CorruptCheckpointError, UnsafeCheckpointError, load, save
from chronograd.training.data import default_prepare_batch
from chronograd.training.events import Event, EventFilter
from chronograd.training.handlers import Checkpoint, EarlyStopping, ProgressBar
from chronograd.training.history import History
from chronograd.training.regularization import (
    RegularizerStep,
    dale_metrics,
    regularizer_metrics,
)
from chronograd.training.resume import TrainingInterrupted
from chronograd.training.tensorboard import TensorBoardLogger
from chronograd.training.trainer import Trainer, TrainerState

__all__ = [
    "Checkpoint",
    "CorruptCheckpointError",
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
    "apply_to_model",
    "dale_metrics",
    "default_prepare_batch",
    "load",
    "regularizer_metrics",
    "run_sequence",
    "save",
]
