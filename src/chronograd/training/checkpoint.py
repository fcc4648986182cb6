"""Checkpoint files: written atomically, read without executing anything.

``save(obj, path)`` writes to a temporary file in the same directory, flushes and fsyncs it,
then renames it over ``path`` (a crash leaves either the old or the new file, never half of
one). ``load(path)`` uses ``torch.load(weights_only=True)``: tensors, numbers, strings and
containers only; a file that would run code on unpickling is refused with a clear error.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch


class UnsafeCheckpointError(ValueError):
    """The file holds objects other than tensors and plain containers (refused, not run)."""


def save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Atomically write ``obj`` (tensors / dicts / lists / numbers / strings) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:  # make the rename itself durable
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path: str | os.PathLike[str], map_location: Any = None) -> Any:
    """Load a checkpoint with ``weights_only=True``; refuse anything that would execute code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it contains objects other than tensors and plain "
            f"containers, which could execute code when unpickled ({str(e).splitlines()[0]}). "
            "Only load checkpoints written by chronograd or another trusted source."
        ) from None
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"{path} is not a readable checkpoint ({e})") from None
