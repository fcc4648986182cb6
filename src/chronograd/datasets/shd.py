"""Spiking Heidelberg Digits (SHD) and Spiking Speech Commands (SSC) from their HDF5 files.

Cramer, Stradmann, Schemmel & Zenke (2020), "The Heidelberg spiking data sets for the
systematic evaluation of spiking neural networks", IEEE TNNLS. Each file (``shd_train.h5``,
``shd_test.h5``, ``ssc_train.h5``, ...) holds

- ``spikes/times``: one variable-length float array per recording, spike times in seconds;
- ``spikes/units``: the matching variable-length integer arrays, input channels ``0 … 699``;
- ``labels``: ``(N,)`` integer classes (SHD: 20 spoken digits, SSC: 35 words).

The files are read with ``h5py`` (``pip install 'chronograd[data]'``); nothing is downloaded.
Spikes are binned (:mod:`chronograd.datasets.events`) with ``dt`` seconds per step (default
10 ms) over ``duration`` seconds (default 1 s: ``T = 100``; most recordings end before).
Loss: cross-entropy of the logits of the last ``last`` steps; metric: accuracy (chance: the
validation share of the most frequent class).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from chronograd.datasets.streams import Stream, stream_task
from chronograd.tasks.base import Task

N_UNITS = 700
CLASSES = {"shd": 20, "ssc": 35}


def read_h5(path: str | Path) -> tuple[list[Stream], np.ndarray]:
    """The ``(times, units)`` streams and the labels of an SHD/SSC ``.h5`` file."""
    try:
        import h5py
    except ImportError as e:
        raise ImportError(
            "reading SHD/SSC .h5 files needs h5py; install it with: pip install 'chronograd[data]'"
        ) from e
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no SHD/SSC file at {path}; give the path of e.g. shd_train.h5 (chronograd downloads nothing)"
        )
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 file ({e})") from None
    with f:
        missing = [k for k in ("spikes/times", "spikes/units", "labels") if k not in f]
        if missing:
            raise ValueError(
                f"{path} lacks {', '.join(missing)}; an SHD/SSC file holds spikes/times, "
                "spikes/units and labels"
            )
        times, units = f["spikes/times"][()], f["spikes/units"][()]
        labels = np.asarray(f["labels"][()]).astype(np.int64)
    streams = [
        (np.asarray(t, dtype=np.float64), np.asarray(u, dtype=np.int64))
        for t, u in zip(times, units)
    ]
    return streams, labels


def load(
    path: str | Path,
    *,
    kind: str = "shd",
    test: str | Path | None = None,
    dt: float = 0.01,
    duration: float = 1.0,
    **options: Any,
) -> Task:
    """A task from an SHD (``kind="shd"``) or SSC (``"ssc"``) file.

    Args:
        path: the training file (``shd_train.h5``).
        test: the held-out file (``shd_test.h5``) used for validation; default: a seeded 20%
            split of ``path``.
        dt: seconds per step; duration: seconds binned (``T = ceil(duration / dt)``).
        options: of :func:`~chronograd.datasets.streams.stream_task` (``spikes``, ``align``,
            ``last``, ``batch_size``, ``seed``, ``val_fraction``, ``split_seed``).
    """
    if kind not in CLASSES:
        raise ValueError(f"kind must be one of {sorted(CLASSES)}, got {kind!r}")
    streams, labels = read_h5(path)
    val_streams, val_labels = read_h5(test) if test is not None else (None, None)
    return stream_task(
        f"{kind}:{Path(path).stem}",
        f"{kind.upper()} spikes from {Path(path).name}: N={len(labels)}, {N_UNITS} channels, dt={dt}s",
        streams,
        labels,
        N_UNITS,
        dt=dt,
        duration=duration,
        n_classes=max(CLASSES[kind], int(labels.max()) + 1),
        val_streams=val_streams,
        val_labels=val_labels,
        **options,
    )
