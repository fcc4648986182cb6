"""Finite data sets held in memory: a fixed seeded split and seeded epochs.

:class:`ArrayData` holds ``N`` stored examples ``x`` and their targets ``y`` with a fixed
train/validation split. An epoch is a permutation of the training split drawn from
``(seed, epoch)``; validation is the whole validation split in order. Inputs are built batch
by batch by ``encode`` (which may draw spikes from the batch's generator), so a spike encoding
of a data set is never materialised for all examples at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, final

import torch
from torch import Tensor

from chronograd.tasks.seeding import derive_seed

Encode = Callable[[Tensor, torch.Generator], Tensor]  # x[idx] (B, ...) -> inputs (T, B, I)
Target = Callable[[Tensor, int], Tensor]  # (y[idx] (B, ...), T) -> targets (T, B, ...)


def split_indices(n: int, val_fraction: float, split_seed: int) -> tuple[Tensor, Tensor]:
    """A seeded permutation of ``range(n)`` cut into (train, validation) index tensors.

    The validation split holds ``round(n · val_fraction)`` examples, at least one, and leaves
    at least one for training.
    """
    if n < 2:
        raise ValueError(f"a train/validation split needs at least 2 examples, got {n}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(split_seed, 3)))
    return perm[n_val:], perm[:n_val]


def time_major_labels(y: Tensor, T: int) -> Tensor:
    """Class labels ``(B,)`` repeated over time: ``(T, B)`` int64."""
    return y.long()[None, :].expand(T, -1).contiguous()


def time_major_sequences(y: Tensor, T: int) -> Tensor:
    """Target sequences ``(B, T, O)`` -> ``(T, B, O)``."""
    return y.transpose(0, 1).contiguous()


def time_major(x: Tensor, g: torch.Generator) -> Tensor:
    """Batch-first sequences ``(B, T, F)`` -> time-first ``(T, B, F)`` (no randomness)."""
    return x.transpose(0, 1).contiguous()


@final
@dataclass(frozen=True, eq=False)
class ArrayData:
    """In-memory examples with a fixed split.

    Attributes:
        x: ``(N, ...)`` stored examples (any layout ``encode`` understands).
        y: ``(N,)`` class labels or ``(N, T, O)`` target sequences.
        train_idx, val_idx: disjoint index tensors into ``x`` and ``y``.
        encode: ``(x[idx] (B, ...), generator) -> inputs (T, B, I)``.
        target: ``(y[idx], T) -> targets (T, B)`` or ``(T, B, O)``.
    """

    x: Tensor
    y: Tensor
    train_idx: Tensor
    val_idx: Tensor
    encode: Encode = time_major
    target: Target = time_major_labels

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"x holds {self.x.shape[0]} examples but y holds {self.y.shape[0]}; they must match"
            )
        if len(self.train_idx) == 0 or len(self.val_idx) == 0:
            raise ValueError("both the training and the validation split must be non-empty")

    def n_batches(self, split: Literal["train", "val"], batch_size: int) -> int:
        """Batches of ``batch_size`` in ``split`` (the last one may be smaller)."""
        n = len(self.train_idx if split == "train" else self.val_idx)
        return -(-n // batch_size)

    def get(self, idx: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Inputs ``(T, B, I)`` and targets of the examples ``idx`` (B,)."""
        x = self.encode(self.x[idx], g)
        return x, self.target(self.y[idx], x.shape[0])

    def batches(
        self, split: Literal["train", "val"], epoch: int, batch_size: int, seed: int
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One pass over ``split``: the training split in a permutation seeded by
        ``(seed, epoch)``, the validation split in order; the last batch may be smaller."""
        code = 0 if split == "train" else 1
        if split == "train":
            g = torch.Generator().manual_seed(derive_seed(seed, code, epoch))
            order = self.train_idx[torch.randperm(len(self.train_idx), generator=g)]
        else:
            order = self.val_idx
        for i, start in enumerate(range(0, len(order), batch_size)):
            g = torch.Generator().manual_seed(
                derive_seed(seed, code, epoch, i, 1)
            )  # spike encodings
            yield self.get(order[start : start + batch_size], g)

    def sample(self, batch_size: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """``batch_size`` training examples drawn with replacement (``Task.batch``)."""
        pick = torch.randint(len(self.train_idx), (batch_size,), generator=g)
        return self.get(self.train_idx[pick], g)
