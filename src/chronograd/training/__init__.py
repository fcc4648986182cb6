"""Training: the trainer, its events, history, handlers and checkpoint files."""

from chronograd.training.checkpoint import UnsafeCheckpointError, load, save
from chronograd.training.events import Event, EventFilter
from chronograd.training.handlers import Checkpoint, EarlyStopping, ProgressBar
from chronograd.training.history import History
from chronograd.training.tensorboard import TensorBoardLogger
from chronograd.training.trainer import Trainer, TrainerState

__all__ = [
    "Checkpoint",
    "EarlyStopping",
    "Event",
    "EventFilter",
    "History",
    "ProgressBar",
    "TensorBoardLogger",
    "Trainer",
    "TrainerState",
    "UnsafeCheckpointError",
    "load",
    "save",
]
