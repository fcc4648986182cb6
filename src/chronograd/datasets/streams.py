"""A classification task from labelled event streams, binned batch by batch.

The streams stay in memory as events; a batch's frames ``(T, B, F)`` are binned when the batch
is drawn (:func:`~chronograd.datasets.events.bin_batch`), so a data set such as SHD (8156
recordings, 700 channels) is never held as dense frames. The split, epochs and validation
follow :class:`~chronograd.tasks.ArrayData`: a seeded train/validation split (or the file's own
test set as validation), a seeded permutation per epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from chronograd.datasets.events import bin_batch, n_bins
from chronograd.objectives import Objective
from chronograd.tasks.arrays import ArrayData, split_indices
from chronograd.tasks.base import Task, positive_int
from chronograd.tasks.digits import majority_chance
from chronograd.tasks.metrics import accuracy

Stream = tuple[np.ndarray, np.ndarray]  # (times (K,), channels (K,))


def stream_task(
    name: str,
    description: str,
    streams: Sequence[Stream],
    labels: np.ndarray,
    n_channels: int,
    *,
    dt: float,
    duration: float | None = None,
    spikes: bool = False,
    align: str = "start",
    last: int = 1,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    batch_size: int = 32,
    seed: int = 0,
    n_classes: int | None = None,
    val_streams: Sequence[Stream] | None = None,
    val_labels: np.ndarray | None = None,
) -> Task:
    """A classification :class:`~chronograd.tasks.Task` over event streams.

    Args:
        streams, labels: ``N`` event streams (times from the stream's start, channels) and their
            integer classes ``(N,)``.
        n_channels: ``F``, the input features.
        dt: bin width (the unit of the times).
        duration: the window binned, ``T = ceil(duration / dt)`` steps; default: the latest event
            of all streams (every event is seen). Every example has the same ``T``.
        spikes: clip counts to 0/1 spikes.
        align: ``"start"``: every stream starts at step 0 (silence after a short one);
            ``"end"``: every stream is shifted to end in the last bin, so the ``last`` steps the
            loss reads follow each example's final events (silence before a short one).
        last: the loss and the accuracy read the logits of the last ``last`` steps.
        val_fraction, split_seed: the seeded validation split, unless ``val_streams`` (a held-out
            set, e.g. the data set's test file) is given.
        n_classes: output size (default: ``max(label) + 1``).

    Returns:
        A task with inputs ``(T, B, F)`` and labels ``(T, B)``.
    """
    positive_int("batch_size", batch_size)
    positive_int("last", last)
    if align not in ("start", "end"):
        raise ValueError(f"align must be 'start' or 'end', got {align!r}")
    labels = np.asarray(labels).reshape(-1)
    if len(streams) != len(labels):
        raise ValueError(
            f"{len(streams)} event streams but {len(labels)} labels; they must pair up"
        )
    if len(streams) == 0:
        raise ValueError(f"{name}: the file holds no examples")
    all_streams = list(streams) + list(val_streams or [])
    all_labels = np.concatenate(
        [labels, np.asarray(val_labels if val_labels is not None else [], dtype=labels.dtype)]
    )
    if duration is None:
        duration = max((float(t.max()) for t, _ in all_streams if len(t)), default=dt) + dt / 2
    T = n_bins(duration, dt)
    if last > T:
        raise ValueError(
            f"last={last} exceeds the sequence length T={T}; lower last or raise duration"
        )
    y = torch.as_tensor(all_labels.astype(np.int64))
    if val_streams is not None:
        n = len(streams)
        train_idx, val_idx = torch.arange(n), torch.arange(n, len(all_streams))
    else:
        train_idx, val_idx = split_indices(len(streams), val_fraction, split_seed)

    def placed(i: int) -> Stream:
        t, c = all_streams[i]
        if align == "end" and len(t):
            t = t + ((T - 1) * dt - float(t.max()))  # the last event falls in bin T-1
        return t, c

    def encode(idx: Tensor, g: torch.Generator) -> Tensor:
        return bin_batch([placed(int(i)) for i in idx], n_channels, dt=dt, steps=T, spikes=spikes)

    data = ArrayData(torch.arange(len(all_streams)), y, train_idx, val_idx, encode=encode)
    classes = n_classes if n_classes is not None else int(y.max()) + 1
    return Task(
        name=name,
        description=description,
        input_size=n_channels,
        output_size=classes,
        seq_len=T,
        objective=Objective("cross_entropy", last=last),
        metric=accuracy(last, majority_chance(y, val_idx)),
        sample=data.sample,
        batch_size=batch_size,
        batches_per_epoch=data.n_batches("train", batch_size),
        val_batches=data.n_batches("val", batch_size),
        seed=seed,
        spiking=spikes,
        suggested={
            "cell": "lif",
            "hidden": 128,
            "lr": 5e-3,
            "tau_mem": 10.0,
            "tau_out": float(T) / 4,
        },
        data=data,
    )
