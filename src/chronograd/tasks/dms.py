"""Delayed match-to-sample with a configurable delay (after Miller, Erickson & Desimone 1996).

A trial has five epochs (durations in ms, NeuroGym's defaults for this task): fixation 300,
*sample* 500, *delay* ``delay_ms`` (default 1000), *test* 500, *decision* 900. One of
``n_stimuli`` stimuli is shown during the sample epoch and one during the test epoch; the
network must answer during the decision epoch whether they were the same (*match*, label 1)
or not (label 0). Matches occur with probability 1/2; a non-matching test stimulus is drawn
uniformly from the other stimuli.

Spike encoding (as for evidence accumulation): ``n_stimuli + 2`` groups of ``channels``
Poisson inputs: one group per stimulus, firing at ``rate_hz`` (40 Hz) while its stimulus is
shown; a *go* group firing at 40 Hz during the decision epoch; a background group at 10 Hz
throughout. ``T = 300 + 500 + delay + 500 + 900`` steps of 1 ms (3200 by default).

Loss: cross-entropy during the decision epoch. Metric: recall error of the arg-max of the
logits averaged over the decision epoch; chance 0.5. Published outcome: macaques perform the
task with delays of seconds while prefrontal neurons hold the sample (Miller et al. 1996); it
is a standard working-memory benchmark for trained recurrent networks (NeuroGym), which solve
it when they can bridge the delay. The delay sets the memory span the learning rule must
assign credit across.

``time_scale = s`` scales every duration by ``s`` and rates by ``1/s`` (capped at 1):
``s = 0.1`` (the default) is the fast variant, ``T = 320``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from chronograd.objectives import Objective
from chronograd.tasks.base import (
    Task,
    check_encoding,
    check_time_scale,
    encode,
    positive_int,
    rate_per_step,
    register,
    steps,
)
from chronograd.tasks.metrics import recall_error

EPOCHS_MS = {"fixation": 300.0, "sample": 500.0, "test": 500.0, "decision": 900.0}


@register("dms")
def delayed_match_to_sample(
    *,
    time_scale: float = 0.1,
    delay_ms: float = 1000.0,
    n_stimuli: int = 2,
    channels: int = 10,
    rate_hz: float = 40.0,
    noise_hz: float = 10.0,
    fixation_ms: float = EPOCHS_MS["fixation"],
    sample_ms: float = EPOCHS_MS["sample"],
    test_ms: float = EPOCHS_MS["test"],
    decision_ms: float = EPOCHS_MS["decision"],
    encoding: str = "spikes",
    batch_size: int = 64,
    batches_per_epoch: int = 10,
    val_batches: int = 4,
    seed: int = 0,
) -> Task:
    """Delayed match-to-sample; ``time_scale=1`` gives 1 ms steps (T = 3200 by default).

    Returns inputs ``(T, B, (n_stimuli + 2)·channels)`` and labels ``(T, B)`` (1: match).
    """
    s = check_time_scale(time_scale)
    for name, v in (("channels", channels), ("batch_size", batch_size)):
        positive_int(name, v)
    if not isinstance(n_stimuli, int) or n_stimuli < 2:
        raise ValueError(f"n_stimuli must be an int >= 2 (a non-match needs two), got {n_stimuli}")
    if not delay_ms >= 0:
        raise ValueError(f"delay_ms must be >= 0, got {delay_ms}")
    encoding = check_encoding(encoding)
    fix = round(fixation_ms * s)
    sample_n, test_n = steps(sample_ms, s, "sample_ms"), steps(test_ms, s, "test_ms")
    decision, delay = steps(decision_ms, s, "decision_ms"), round(delay_ms * s)
    t_sample, t_test = fix, fix + sample_n + delay
    T = t_test + test_n + decision
    rate, noise = rate_per_step(rate_hz, s), rate_per_step(noise_hz, s)
    n_groups = n_stimuli + 2

    def sample(B: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        first = torch.randint(0, n_stimuli, (B,), generator=g)  # (B,)
        match = torch.rand(B, generator=g) < 0.5
        other = (first + torch.randint(1, n_stimuli, (B,), generator=g)) % n_stimuli
        second = torch.where(match, first, other)
        groups = torch.zeros(T, B, n_groups)
        groups[t_sample : t_sample + sample_n] += rate * torch.eye(n_groups)[first]  # (B, G)
        groups[t_test : t_test + test_n] += rate * torch.eye(n_groups)[second]
        groups[T - decision :, :, n_stimuli] = rate  # go cue
        groups[:, :, n_stimuli + 1] = noise  # background
        rates = groups[..., None].expand(T, B, n_groups, channels).reshape(T, B, -1)
        label = match.long()[None, :].expand(T, B).contiguous()
        return encode(rates, g, encoding), label

    return Task(
        name="dms",
        description=(
            f"Delayed match-to-sample, {delay_ms:g} ms delay (Miller et al. 1996; NeuroGym timing)"
        ),
        input_size=n_groups * channels,
        output_size=2,
        seq_len=T,
        objective=Objective("cross_entropy", last=decision),
        metric=recall_error(decision),
        sample=sample,
        batch_size=batch_size,
        batches_per_epoch=batches_per_epoch,
        val_batches=val_batches,
        seed=seed,
        spiking=encoding == "spikes",
        suggested={
            "cell": "lsnn",
            "hidden": 100,
            "lr": 5e-3,
            "tau_mem": 20.0 * s,
            "tau_adapt": 2000.0 * s,
            "tau_out": 20.0 * s,
            "threshold": 0.6,
        },
    )
