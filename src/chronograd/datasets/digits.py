"""Sequential and permuted digits: scikit-learn's 8×8 digits read one pixel per step.

Sequential MNIST's pixel-by-pixel protocol (Le, Jaitly & Hinton 2015) on the small digits set
bundled with scikit-learn (nothing is downloaded): ``T = 64`` steps, one input (the pixel value
in [0, 1]). The permuted variant reads the pixels in one fixed random order drawn from
``permutation_seed``, the same for every image, which removes the local structure of the raster
order (permuted sequential MNIST). Loss: cross-entropy at the last ``last`` steps; metric:
accuracy (chance about 0.1).
"""

from __future__ import annotations

import torch

from chronograd.objectives import Objective
from chronograd.tasks.arrays import ArrayData, split_indices
from chronograd.tasks.base import Task, positive_int
from chronograd.tasks.digits import load as load_digits
from chronograd.tasks.digits import majority_chance
from chronograd.tasks.metrics import accuracy


def pixel_digits(
    *,
    permuted: bool = False,
    permutation_seed: int = 0,
    last: int = 1,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    batch_size: int = 64,
    seed: int = 0,
) -> Task:
    """Pixel-by-pixel digits, inputs ``(64, B, 1)``, labels ``(64, B)``; ``permuted`` reorders
    the pixels by a permutation drawn from ``permutation_seed``."""
    positive_int("last", last)
    positive_int("batch_size", batch_size)
    if last > 64:
        raise ValueError(f"last={last} exceeds the sequence length T=64")
    images, labels = load_digits()
    pixels = images.reshape(-1, 64)
    if permuted:
        order = torch.randperm(64, generator=torch.Generator().manual_seed(permutation_seed))
        pixels = pixels[:, order]
    train_idx, val_idx = split_indices(len(labels), val_fraction, split_seed)
    data = ArrayData(pixels[:, :, None].contiguous(), labels, train_idx, val_idx)
    name = "permuted-digits" if permuted else "sequential-digits"
    return Task(
        name=name,
        description=f"{'Permuted' if permuted else 'Sequential'} pixel-by-pixel digits (scikit-learn, 8x8)",
        input_size=1,
        output_size=10,
        seq_len=64,
        objective=Objective("cross_entropy", last=last),
        metric=accuracy(last, majority_chance(labels, val_idx)),
        sample=data.sample,
        batch_size=batch_size,
        batches_per_epoch=data.n_batches("train", batch_size),
        val_batches=data.n_batches("val", batch_size),
        seed=seed,
        suggested={"cell": "gru", "hidden": 64, "lr": 1e-2},
        data=data,
    )
