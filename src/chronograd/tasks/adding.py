"""The adding problem (Hochreiter & Schmidhuber 1997; the form of Le et al. 2015 used by FPTT).

A trial has ``T`` steps and two input channels: a value ``v_t ~ U(0, 1)`` at every step and a
marker ``m_t`` that is 1 at exactly two steps, one drawn uniformly from the first half
``[0, ⌊T/2⌋)`` and one from the second half ``[⌊T/2⌋, T)``, and 0 elsewhere. The target is the
sum of the two marked values, ``y* = Σ_t m_t v_t``, to be output at the last step.

Inputs ``(T, B, 2)``; targets ``(T, B, 1)`` (``y*`` repeated; only the last step counts).
Loss and metric: squared error at the last step. Trivial baseline: always answering 1, the
mean of ``y*``, scores ``E[(y* - 1)²] = Var(v_a + v_b) = 2 · 1/12 = 1/6 ≈ 0.167``; a network
that beats it has carried information across the sequence; solving it means an MSE near 0.
Published setting: FPTT (Kag & Saligrama 2021) compares its online training with BPTT on
``T`` = 200, 500 and 1000, where learning means leaving the 0.167 plateau.

The default ``seq_len = 50`` is the fast variant; pass ``seq_len=200`` (or 500, 1000) for the
published settings.
"""

from __future__ import annotations

import torch
from torch import Tensor

from chronograd.objectives import Objective
from chronograd.tasks.base import Task, positive_int, register
from chronograd.tasks.metrics import final_mse

BASELINE_MSE = 2.0 / 12.0  # Var(U(0,1)) = 1/12 for each of the two marked values


@register("adding")
def adding(
    *,
    seq_len: int = 50,
    batch_size: int = 64,
    batches_per_epoch: int = 50,
    val_batches: int = 4,
    seed: int = 0,
) -> Task:
    """The adding problem with sequences of ``seq_len`` steps (>= 2).

    Returns inputs ``(T, B, 2)`` (value, marker) and targets ``(T, B, 1)``.
    """
    positive_int("seq_len", seq_len)
    positive_int("batch_size", batch_size)
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 (one marker in each half), got {seq_len}")
    T, half = seq_len, seq_len // 2

    def sample(B: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        values = torch.rand(T, B, generator=g)  # (T, B)
        first = torch.randint(0, half, (B,), generator=g)
        second = torch.randint(half, T, (B,), generator=g)
        marks = torch.zeros(T, B)
        cols = torch.arange(B)
        marks[first, cols] = 1.0
        marks[second, cols] = 1.0
        target = (values * marks).sum(0)  # (B,)
        x = torch.stack([values, marks], -1)  # (T, B, 2)
        return x, target[None, :, None].expand(T, B, 1).contiguous()

    return Task(
        name="adding",
        description=f"Adding problem, T={T} (Hochreiter & Schmidhuber 1997; Kag & Saligrama 2021)",
        input_size=2,
        output_size=1,
        seq_len=T,
        objective=Objective("mse", last=1),
        metric=final_mse(chance=BASELINE_MSE),
        sample=sample,
        batch_size=batch_size,
        batches_per_epoch=batches_per_epoch,
        val_batches=val_batches,
        seed=seed,
        suggested={"cell": "gru", "hidden": 64, "lr": 1e-2},
    )
