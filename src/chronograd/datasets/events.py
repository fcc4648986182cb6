"""Binning address events into frames: ``(T, features)`` counts or spikes per time bin.

An event stream is a list of events ``(t_k, c_k)``: a time ``t_k`` (seconds for SHD/SSC,
microseconds for N-MNIST) and a channel ``c_k`` in ``0 … F-1`` (an input unit, or a flattened
``(polarity, y, x)`` address of a sensor). Binning with a bin width ``dt`` over a window of
``T = ceil(duration / dt)`` bins gives::

    frame[n, c] = #{ k : c_k = c,  n·dt <= t_k - t_0 < (n+1)·dt }        n = 0 … T-1

(``t_0`` = 0 by default). ``spikes=True`` clips the counts to 1 (one spike per bin and channel,
the input a spiking network sees); events at or after ``T·dt`` are dropped. A batch of streams
is binned into ``(T, B, F)``, the time-first layout of every chronograd model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def n_bins(duration: float, dt: float) -> int:
    """``T = ceil(duration / dt)`` bins (at least one) covering ``[0, duration)``."""
    if not dt > 0:
        raise ValueError(f"the bin width dt must be > 0, got {dt}")
    if not duration > 0:
        raise ValueError(f"the window duration must be > 0, got {duration}")
    return max(1, math.ceil(duration / dt - 1e-9))


def bin_events(
    times: np.ndarray,
    channels: np.ndarray,
    n_channels: int,
    *,
    dt: float,
    steps: int,
    spikes: bool = False,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """One event stream -> a frame sequence ``(steps, n_channels)``.

    Args:
        times: ``(K,)`` event times, in the unit of ``dt``, from the stream's start.
        channels: ``(K,)`` integer channels in ``0 … n_channels-1``.
        n_channels: ``F``, the feature count.
        dt: bin width.
        steps: ``T``, the number of bins; later events are dropped.
        spikes: clip counts to 1.
        dtype: of the result (default: torch's default dtype).

    Returns:
        ``(T, F)`` event counts (or 0/1 spikes) per bin and channel.
    """
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    channels = np.asarray(channels).reshape(-1).astype(np.int64)
    if times.shape != channels.shape:
        raise ValueError(
            f"times and channels must pair up, got {times.shape[0]} times and "
            f"{channels.shape[0]} channels"
        )
    if channels.size and (channels.min() < 0 or channels.max() >= n_channels):
        raise ValueError(
            f"event channels must lie in 0..{n_channels - 1}, got {channels.min()}..{channels.max()}; "
            "check n_channels (the sensor size or the unit count)"
        )
    bins = np.floor(times / dt).astype(np.int64)
    keep = (bins >= 0) & (bins < steps)
    flat = bins[keep] * n_channels + channels[keep]
    counts = np.bincount(flat, minlength=steps * n_channels).reshape(steps, n_channels)
    if spikes:
        counts = np.minimum(counts, 1)
    return torch.as_tensor(counts, dtype=dtype or torch.get_default_dtype())


def bin_batch(
    streams: Sequence[tuple[np.ndarray, np.ndarray]],
    n_channels: int,
    *,
    dt: float,
    steps: int,
    spikes: bool = False,
) -> Tensor:
    """Event streams ``[(times, channels), ...]`` of ``B`` examples -> ``(T, B, F)`` frames."""
    frames = [bin_events(t, c, n_channels, dt=dt, steps=steps, spikes=spikes) for t, c in streams]
    return torch.stack(frames, dim=1)
