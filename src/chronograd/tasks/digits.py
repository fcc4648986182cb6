"""Sequential digits: scikit-learn's bundled 8×8 handwritten digits read as sequences.

The data set (``sklearn.datasets.load_digits``: 1797 images of 8×8 pixels with values 0–16,
ten classes of about 180 images each; the UCI optical-recognition test set, shipped with
scikit-learn, so nothing is downloaded) is split once into training and validation examples by
a seeded permutation (``split_seed``; 20% validation). Pixels are scaled to [0, 1]. Encodings:

- ``rows``: one row per step, ``T = 8``, ``I = 8`` (sequential MNIST's row-by-row variant);
- ``pixels``: one pixel per step in raster order, ``T = 64``, ``I = 1`` (pixel-by-pixel);
- ``spikes``: every pixel a Poisson channel firing with probability ``max_rate · p`` per step
  for pixel value ``p``, ``T = steps`` (default 25), ``I = 64``; spikes are drawn batch by batch.

Loss: cross-entropy of the logits at the last ``last`` steps (default 1). Metric: accuracy of
the arg-max of the logits averaged over those steps; chance is the validation accuracy of the
best constant answer, the share of the most frequent validation class (about 0.1). Published
outcome: these are small stand-ins for sequential MNIST (Le et al. 2015), on which BPTT-trained
LSNNs approach the accuracy of LSTMs (Bellec et al. 2018); here a small GRU reads the rows to
over 90% in a few epochs.

scikit-learn is imported when the task is built; install it with ``pip install
'chronograd[data]'``.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from chronograd.objectives import Objective
from chronograd.tasks.arrays import ArrayData, Encode, split_indices, time_major
from chronograd.tasks.base import Task, poisson, positive_int, register
from chronograd.tasks.metrics import accuracy

ENCODINGS = ("rows", "pixels", "spikes")


@functools.lru_cache(maxsize=1)
def load() -> tuple[Tensor, Tensor]:
    """Images ``(1797, 8, 8)`` in [0, 1] and labels ``(1797,)`` int64."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "the digits task reads scikit-learn's bundled digits, but scikit-learn is not "
            "installed; install it with: pip install 'chronograd[data]'"
        ) from e
    images, labels = load_digits(return_X_y=True)
    x = torch.as_tensor(images, dtype=torch.get_default_dtype()).reshape(-1, 8, 8) / 16.0
    return x, torch.as_tensor(labels, dtype=torch.long)


def spike_encode(px: Tensor, g: torch.Generator, *, steps: int, max_rate: float) -> Tensor:
    """Pixel values ``(B, 64)`` in [0, 1] -> Poisson spikes ``(steps, B, 64)``."""
    return poisson(max_rate * px[None].expand(steps, *px.shape), g)


def majority_chance(y: Tensor, val_idx: Tensor) -> float:
    """The best constant answer's validation accuracy (the top validation class's share)."""
    return float(torch.bincount(y[val_idx]).max()) / len(val_idx)


@register("digits")
def digits(
    *,
    encoding: str = "rows",
    steps: int = 25,
    max_rate: float = 0.5,
    last: int = 1,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    batch_size: int = 64,
    seed: int = 0,
) -> Task:
    """Sequential digits in one of the ``rows`` / ``pixels`` / ``spikes`` encodings.

    Returns inputs ``(T, B, I)`` and labels ``(T, B)`` (the class, repeated over time).
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    positive_int("steps", steps)
    positive_int("last", last)
    positive_int("batch_size", batch_size)
    if not 0 < max_rate <= 1:
        raise ValueError(
            "max_rate (spike probability per step at full intensity) must lie in (0, 1], got "
            f"{max_rate}"
        )
    images, labels = load()
    train_idx, val_idx = split_indices(len(labels), val_fraction, split_seed)
    enc: Encode = time_major
    if encoding == "rows":
        x, T, I = images, 8, 8
    elif encoding == "pixels":
        x, T, I = images.reshape(-1, 64, 1), 64, 1
    else:
        x, T, I = images.reshape(-1, 64), steps, 64
        enc = functools.partial(spike_encode, steps=steps, max_rate=max_rate)

    if last > T:
        raise ValueError(f"last={last} exceeds the sequence length T={T}")
    data = ArrayData(x, labels, train_idx, val_idx, encode=enc)
    chance = majority_chance(labels, val_idx)
    hints: dict[str, object] = {"cell": "gru", "hidden": 64, "lr": 1e-2}
    if encoding == "spikes":
        hints = {
            "cell": "lif",
            "hidden": 100,
            "lr": 5e-3,
            "tau_mem": 5.0,
            "tau_out": float(steps),
            "threshold": 0.6,
        }
    return Task(
        name="digits",
        description=f"Sequential digits, {encoding} (scikit-learn load_digits, 8x8)",
        input_size=I,
        output_size=10,
        seq_len=T,
        objective=Objective("cross_entropy", last=last),
        metric=accuracy(last, chance),
        sample=data.sample,
        batch_size=batch_size,
        batches_per_epoch=data.n_batches("train", batch_size),
        val_batches=data.n_batches("val", batch_size),
        seed=seed,
        spiking=encoding == "spikes",
        suggested=hints,
        data=data,
    )
