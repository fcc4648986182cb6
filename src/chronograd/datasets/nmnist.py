"""N-MNIST (Orchard et al. 2015, "Converting static image datasets to spiking neuromorphic
datasets using saccades", Front. Neurosci.) from its binary event files.

The data set's layout (as distributed, and as ``tonic`` reads it): a folder per class,
``Train/0/00002.bin`` ..., each file a sequence of 40-bit events, five bytes each::

    byte 0: x address (0..33)     byte 1: y address (0..33)
    byte 2: bit 7 polarity, bits 6..0 timestamp bits 22..16
    bytes 3, 4: timestamp bits 15..0 (microseconds)

An event's channel is ``p·H·W + y·W + x`` (``F = 2·34·34 = 2312``). The events are binned with
``dt`` microseconds per step (default 10 ms) over ``duration`` (default: the latest event,
about 300 ms). ``tonic`` itself is not used (it would pull in librosa and numba); this reader
covers the binary format only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from chronograd.datasets.streams import Stream, stream_task
from chronograd.tasks.base import Task

SENSOR = (34, 34)  # (width, height)


def read_events(path: str | Path) -> np.ndarray:
    """Events of one ``.bin`` file as a structured array with fields ``x, y, p, t`` (µs)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        raise ValueError(
            f"{path} holds {raw.size} bytes, not a whole number of 5-byte N-MNIST events"
        )
    ev = raw.reshape(-1, 5).astype(np.int64)
    out = np.empty(
        len(ev), dtype=[("x", np.int64), ("y", np.int64), ("p", np.int64), ("t", np.int64)]
    )
    out["x"], out["y"], out["p"] = ev[:, 0], ev[:, 1], ev[:, 2] >> 7
    out["t"] = ((ev[:, 2] & 0x7F) << 16) | (ev[:, 3] << 8) | ev[:, 4]
    return out


def write_events(path: str | Path, x: Any, y: Any, p: Any, t: Any) -> None:
    """Write events in the N-MNIST binary format (the inverse of :func:`read_events`)."""
    x, y, p, t = (np.asarray(a, dtype=np.int64) for a in (x, y, p, t))
    raw = np.stack([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF], axis=1).astype(
        np.uint8
    )
    raw.tofile(path)


def read_folder(
    root: str | Path, sensor: tuple[int, int] = SENSOR
) -> tuple[list[Stream], np.ndarray]:
    """Streams ``(t, channel)`` and labels of ``root/<class>/*.bin`` (class folders ``0``, ``1``, ...)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"no N-MNIST folder at {root}; give the folder holding the class folders 0..9 "
            "(e.g. .../Train), chronograd downloads nothing"
        )
    W, H = sensor
    streams: list[Stream] = []
    labels: list[int] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        for f in sorted(d.glob("*.bin")):
            ev = read_events(f)
            if len(ev) and (ev["x"].max() >= W or ev["y"].max() >= H):
                raise ValueError(
                    f"{f} has addresses outside the {W}x{H} sensor; pass sensor=(W, H)"
                )
            streams.append((ev["t"].astype(np.float64), ev["p"] * H * W + ev["y"] * W + ev["x"]))
            labels.append(int(d.name))
    if not streams:
        raise ValueError(
            f"{root} has no <class>/*.bin files (expected folders 0..9 of .bin events)"
        )
    return streams, np.asarray(labels, dtype=np.int64)


def load(
    path: str | Path,
    *,
    test: str | Path | None = None,
    dt: float = 10_000.0,
    duration: float | None = None,
    sensor: tuple[int, int] = SENSOR,
    **options: Any,
) -> Task:
    """A task from an N-MNIST folder (``Train``); ``test``: the ``Test`` folder as validation.

    ``dt`` and ``duration`` in microseconds; options as
    :func:`~chronograd.datasets.streams.stream_task`.
    """
    streams, labels = read_folder(path, sensor)
    val_streams, val_labels = read_folder(test, sensor) if test is not None else (None, None)
    W, H = sensor
    return stream_task(
        f"nmnist:{Path(path).name}",
        f"N-MNIST events from {path}: N={len(labels)}, {2 * W * H} channels, dt={dt:g}us",
        streams,
        labels,
        2 * W * H,
        dt=dt,
        duration=duration,
        n_classes=max(10, int(labels.max()) + 1),
        val_streams=val_streams,
        val_labels=val_labels,
        **options,
    )
