"""The copy task, fixed length or with a length curriculum (Mujika et al. 2018; Menick et al. 2021).

A trial shows ``L`` random bits, one per step, then a *stop* token; during the next ``L`` steps
the input is blank and the network must output the bits in order::

    step       0 … L-1        L       L+1 … 2L
    input      b_1 … b_L      stop    (blank)
    target     —              —       b_1 … b_L          T = 2L + 1

Inputs ``(T, B, 3)`` are one-hot over (bit 0, bit 1, stop), zero when blank; outputs are one
logit per step, ``(T, B, 1)``. Loss: sigmoid cross-entropy over the ``L`` output steps.
Metric: bits per character (that loss in bits); predicting 1/2 scores exactly 1 (chance).

Curriculum mode (``curriculum=True``): training starts at ``L = start`` (default 1) and ``L``
grows by one whenever the epoch's bits per character falls below ``threshold`` = 0.15, the
curriculum KF-RTRL (Mujika et al. 2018) and SnAp (Menick et al. 2021) use; ``task.curriculum``
holds the state, :meth:`~chronograd.tasks.base.Task.attach` connects it to a trainer, and the
history records ``curriculum_length`` and ``longest_solved``. Published outcome: the number
reported is the length reached within a fixed training budget, on which SnAp outperforms
UORO at a comparable cost (Menick et al. 2021).

Fixed mode (the default, the fast variant): every trial has ``L = length`` (default 8).
"""

from __future__ import annotations

import torch
from torch import Tensor

from chronograd.objectives import Objective
from chronograd.tasks.base import Task, positive_int, register
from chronograd.tasks.curriculum import Curriculum
from chronograd.tasks.metrics import bits_per_char


def output_mask(T: int) -> Tensor:
    """1 on the output steps of a ``T = 2L + 1`` copy trial: ``(T,)``."""
    L = (T - 1) // 2
    m = torch.zeros(T)
    m[L + 1 :] = 1.0
    return m


def copy_batch(L: int, B: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Inputs ``(2L+1, B, 3)`` and targets ``(2L+1, B, 1)`` of ``B`` copy trials of length L."""
    bits = torch.randint(0, 2, (L, B), generator=g)  # (L, B)
    T = 2 * L + 1
    dtype = torch.get_default_dtype()
    x = torch.zeros(T, B, 3, dtype=dtype)
    x[:L] = torch.nn.functional.one_hot(bits, 3).to(dtype)
    x[L, :, 2] = 1.0  # stop token
    y = torch.zeros(T, B, 1, dtype=dtype)
    y[L + 1 :, :, 0] = bits.to(dtype)
    return x, y


@register("copy")
def copy(
    *,
    length: int = 8,
    curriculum: bool = False,
    start: int = 1,
    max_length: int = 100,
    threshold: float = 0.15,
    batch_size: int = 32,
    batches_per_epoch: int = 50,
    val_batches: int = 2,
    seed: int = 0,
) -> Task:
    """The copy task: ``length`` bits (fixed mode) or a curriculum from ``start`` to
    ``max_length`` (``seq_len`` is then ``2·max_length + 1``, the longest trial).

    Returns inputs ``(2L+1, B, 3)`` and targets ``(2L+1, B, 1)``.
    """
    for name, v in (("length", length), ("batch_size", batch_size)):
        positive_int(name, v)
    if not isinstance(curriculum, bool):
        raise TypeError(f"curriculum must be True or False, got {curriculum!r}")
    cur = Curriculum(start, max_length, threshold=threshold) if curriculum else None

    def sample(B: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        return copy_batch(cur.length if cur is not None else length, B, g)

    L_max = max_length if cur is not None else length
    mode = f"curriculum {start}..{max_length}" if cur is not None else f"L={length}"
    return Task(
        name="copy",
        description=f"Copy task, {mode} (Mujika et al. 2018; Menick et al. 2021, SnAp)",
        input_size=3,
        output_size=1,
        seq_len=2 * L_max + 1,
        objective=Objective("bce", mask=output_mask),
        metric=bits_per_char(output_mask),
        sample=sample,
        batch_size=batch_size,
        batches_per_epoch=batches_per_epoch,
        val_batches=val_batches,
        seed=seed,
        suggested={"cell": "gru", "hidden": 64, "lr": 1e-2},
        curriculum=cur,
    )
