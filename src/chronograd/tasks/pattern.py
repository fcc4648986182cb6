"""Pattern generation (Bellec et al. 2020, e-prop; the reference code's first tutorial).

A recurrent network receives the same *frozen* Poisson input on every trial and must produce a
fixed target signal at its (leaky) outputs: a regression task that needs no working memory.
As in the reference implementation (IGITUGraz/eligibility_propagation,
``tutorial_pattern_generation.py``):

- input: ``I = 100`` channels of Poisson spikes at 50 Hz, drawn once (fixed by the task's seed)
  and replayed on every trial; ``T = 1000`` steps of 1 ms;
- target of each output ``o``: a sum of four sines with periods ``P_k`` = 1000, 500, 333 and
  200 ms, i.e. ``n_k = ⌊1000 / P_k⌋`` = 1, 2, 3, 5 whole cycles over the sequence, amplitudes
  ``a_{o,k} ~ U(0.5, 2)`` and phases ``φ_{o,k} ~ U(0, 2π)`` (fixed by the seed)::

      s_o(t) = Σ_k a_{o,k} sin(φ_{o,k} + 2π n_k t / (T - 1)),     t = 0 … T-1
      y*_o(t) = (s_o(t) - s_o(0)) / max_t |s_o(t) - s_o(0)|

Loss: mean squared error at every step. Metric: normalised MSE, ``MSE / Var_t(y*)`` per output
(averaged over outputs); predicting the target's mean scores exactly 1 (the chance level).
Published outcome: on this regression task e-prop brings the output close to the target, with
an error approaching BPTT's (Bellec et al. 2020); the reference tutorial trains 100 LIF neurons
(``τ_m = 30`` ms, readout ``τ_out = 30`` ms) for 2000 iterations.

``time_scale = s`` shortens the sequence to ``round(1000 s)`` steps (same whole numbers of
cycles) and raises the input rate to ``50 Hz / s`` per step (capped at 1) so each channel
keeps about 50 spikes: ``s = 0.1`` (the default) is the fast variant, ``T = 100``.

Every trial is identical, so batches hold ``batch_size`` copies of the one trial (default 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from chronograd.objectives import Objective
from chronograd.tasks.base import (
    Task,
    check_time_scale,
    poisson,
    positive_int,
    rate_per_step,
    register,
    steps,
)
from chronograd.tasks.metrics import normalised_mse
from chronograd.tasks.seeding import derive_seed

PERIODS_MS = (1000.0, 500.0, 333.0, 200.0)


def sum_of_sines(T: int, n_cycles: Sequence[int], amplitudes: Tensor, phases: Tensor) -> Tensor:
    """The normalised target ``y*`` ``(T, O)`` from ``amplitudes`` and ``phases`` ``(O, K)``."""
    t = torch.arange(T, dtype=torch.float64) / max(T - 1, 1)  # (T,) in [0, 1]
    n = torch.tensor([float(c) for c in n_cycles], dtype=torch.float64)  # (K,)
    arg = phases.double()[None] + 2 * math.pi * n[None, None] * t[:, None, None]  # (T, O, K)
    s = (amplitudes.double()[None] * torch.sin(arg)).sum(-1)  # (T, O)
    s = s - s[:1]
    scale = s.abs().amax(0).clamp_min(1e-6)  # (O,)
    return (s / scale).to(torch.get_default_dtype())


@register("pattern")
def pattern(
    *,
    time_scale: float = 0.1,
    inputs: int = 100,
    outputs: int = 1,
    rate_hz: float = 50.0,
    duration_ms: float = 1000.0,
    periods_ms: Sequence[float] = PERIODS_MS,
    batch_size: int = 1,
    batches_per_epoch: int = 25,
    val_batches: int = 1,
    seed: int = 0,
) -> Task:
    """The e-prop pattern-generation task; ``time_scale=1`` is the paper's 1000-step version.

    Returns inputs ``(T, B, inputs)`` (0/1 spikes; the same every trial) and targets
    ``(T, B, outputs)``.
    """
    s = check_time_scale(time_scale)
    for name, v in (("inputs", inputs), ("outputs", outputs), ("batch_size", batch_size)):
        positive_int(name, v)
    rate = rate_per_step(rate_hz, s)
    if rate >= 1.0:
        raise ValueError(
            f"rate_hz={rate_hz} at time_scale={s} fires every channel at every step: the frozen "
            f"input would be constant and carry no timing; use time_scale > {rate_hz / 1000:g} "
            "or a lower rate_hz"
        )
    if not periods_ms or any(p <= 0 or p > duration_ms for p in periods_ms):
        raise ValueError(
            f"periods_ms must be positive and at most duration_ms={duration_ms}, got "
            f"{tuple(periods_ms)}"
        )
    T = steps(duration_ms, s, "duration_ms")
    n_cycles = [int(duration_ms // p) for p in periods_ms]
    g = torch.Generator().manual_seed(derive_seed(seed, 4))  # the frozen trial
    amplitudes = 0.5 + 1.5 * torch.rand(outputs, len(n_cycles), generator=g)  # U(0.5, 2)
    phases = 2 * math.pi * torch.rand(outputs, len(n_cycles), generator=g)  # U(0, 2π)
    target = sum_of_sines(T, n_cycles, amplitudes, phases)  # (T, O)
    frozen = poisson(torch.full((T, inputs), rate), g)  # (T, I), the same every trial

    def sample(B: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        x = frozen[:, None, :].expand(T, B, inputs).clone()
        return x, target[:, None, :].expand(T, B, outputs).clone()

    return Task(
        name="pattern",
        description="Pattern generation, frozen Poisson input (Bellec et al. 2020, e-prop)",
        input_size=inputs,
        output_size=outputs,
        seq_len=T,
        objective=Objective("mse"),
        metric=normalised_mse(target.var(0, unbiased=False)),
        sample=sample,
        batch_size=batch_size,
        batches_per_epoch=batches_per_epoch,
        val_batches=val_batches,
        seed=seed,
        spiking=True,
        suggested={
            "cell": "lif",
            "hidden": 100,
            "lr": 3e-3,
            "tau_mem": 30.0 * s,
            "tau_out": 30.0 * s,
            "threshold": 0.6,
        },
    )
