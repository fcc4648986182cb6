"""Evidence (cue) accumulation (Bellec et al. 2020, e-prop, Fig. 3; after Morcos & Harvey 2016).

40 Poisson input channels in four groups of 10: left cues, right cues, recall cue, background.
Each trial draws ``p ∈ {0.3, 0.7}`` and 7 cues, each "left" with probability ``p``; cue ``k``
occupies ``[50 + 150k, 150 + 150k)`` ms of its group at 40 Hz. After a delay the recall group
fires at 40 Hz for the last 150 ms; background channels fire at 10 Hz throughout. The label is
the side with more cues. ``T = 7·150 + 1200 = 2250`` ms at ``dt = 1`` ms.

Loss: cross-entropy during the recall window. Metric: recall error (the prediction is the
arg-max of the logits averaged over the recall window); chance is 0.5. Published outcome: an
LSNN (50 LIF + 50 ALIF) reaches < 7% error with BPTT and with e-prop.

``time_scale = s`` shortens every duration by ``s`` (cue ``100s``, spacing ``150s``, delay
``1200s``, recall ``150s`` steps) and multiplies rates by ``1/s`` (capped at 1), so a cue still
carries about 4 spikes per channel: the fast variant for CI-sized runs.

Variants:

- ``time_scale=1``: the paper's task, ``T = 2250``; cue ``k`` on ``[50 + 150k, 150 + 150k)``,
  recall window ``[2100, 2250)``; rates 0.04 (cues, recall) and 0.01 (background) per step.
- ``time_scale=0.1`` (the default, the fast variant): ``T = 225``; cue ``k`` on
  ``[5 + 15k, 15 + 15k)``, recall window ``[210, 225)``; rates 0.4 and 0.1 per step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from chronograd.objectives import Objective
from chronograd.tasks.base import Task, poisson, positive_int, register
from chronograd.tasks.metrics import recall_error

__all__ = ["evidence", "recall_error"]


@register("evidence")
def evidence(
    *,
    time_scale: float = 0.1,
    n_cues: int = 7,
    channels: int = 10,
    p_group: float = 0.3,
    rate_hz: float = 40.0,
    noise_hz: float = 10.0,
    delay_ms: float = 1200.0,
    batch_size: int = 64,
    batches_per_epoch: int = 10,
    val_batches: int = 4,
    seed: int = 0,
) -> Task:
    """The evidence-accumulation task; ``time_scale=1`` is the paper's 2250-step version.

    Returns inputs ``(T, B, 4·channels)`` of 0/1 spikes and labels ``(T, B)`` (the trial's
    label at every step; only the recall window counts in the loss).
    """
    if not 0 < time_scale <= 1:
        raise ValueError(f"time_scale must lie in (0, 1], got {time_scale}")
    positive_int("n_cues", n_cues)
    positive_int("channels", channels)
    positive_int("batch_size", batch_size)
    if not 0 < p_group < 0.5:
        raise ValueError(f"p_group must lie in (0, 0.5), got {p_group}")
    t_cue, t_int = round(100 * time_scale), round(150 * time_scale)
    recall, delay = round(150 * time_scale), round(delay_ms * time_scale)
    if t_cue < 1 or t_int <= t_cue or recall < 1:
        raise ValueError(f"time_scale={time_scale} is too small for whole-step cues")
    T = n_cues * t_int + delay
    rate = min(1.0, rate_hz / 1000.0 / time_scale)
    noise = min(1.0, noise_hz / 1000.0 / time_scale)
    silence = t_int - t_cue

    def sample(B: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        p_left = torch.where(torch.rand(B, generator=g) < 0.5, p_group, 1 - p_group)  # (B,)
        right = (torch.rand(B, n_cues, generator=g) >= p_left[:, None]).long()  # (B, n_cues)
        rates = torch.zeros(T, B, 4 * channels)
        for k in range(n_cues):
            t0 = silence + k * t_int
            for side in (0, 1):
                on = (right[:, k] == side).float()[None, :, None]  # (1, B, 1)
                rates[t0 : t0 + t_cue, :, side * channels : (side + 1) * channels] += rate * on
        rates[T - recall :, :, 2 * channels : 3 * channels] = rate
        rates[:, :, 3 * channels :] = noise
        x = poisson(rates, g)
        label = (right.sum(1) > n_cues // 2).long()  # (B,) 1: more right cues
        return x, label[None, :].expand(T, B).contiguous()

    return Task(
        name="evidence",
        description="Evidence accumulation, 7 cues (Bellec et al. 2020, e-prop Fig. 3)",
        input_size=4 * channels,
        output_size=2,
        seq_len=T,
        objective=Objective("cross_entropy", last=recall),
        metric=recall_error(recall),
        sample=sample,
        batch_size=batch_size,
        batches_per_epoch=batches_per_epoch,
        val_batches=val_batches,
        seed=seed,
        spiking=True,
        suggested={
            "cell": "lsnn",
            "hidden": 100,
            "lr": 5e-3,
            "tau_mem": 20.0 * time_scale,
            "tau_adapt": 2000.0 * time_scale,
            "tau_out": 20.0 * time_scale,
            "threshold": 0.6,
        },
    )
