"""The seeded noise of the unbiased rank-one influence estimates (UORO, KF-RTRL).

Both rules keep ``M ≈ Σ_r ν_r a_r ⊗ b_r`` with random signs ``ν_r ∈ {−1, +1}``, so that
``E[ν_r ν_s] = δ_rs`` makes the estimate unbiased. The signs are drawn on the CPU from a
generator kept in the rule's carry (the same draws on every device, and a checkpoint resumes
them), and ``samples`` independent estimates may be averaged to reduce the variance.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

EPS = 1e-7
"""Added to norms before dividing (the variance-minimising scalings ``ρ``)."""


def signs(gen: torch.Generator, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Random ±1 of ``shape`` from ``gen`` (drawn on the CPU: the same on every device)."""
    return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(like.device, like.dtype)


def check_seed(seed: Any) -> None:
    """``seed`` is a non-negative int (the noise generator's seed)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def check_samples(samples: Any) -> None:
    """``samples`` is a positive int (independent estimates averaged)."""
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be a positive int (independent estimates), got {samples!r}")


def generator_state(gen: torch.Generator) -> dict[str, Tensor]:
    """The checkpointable part of a rule's carry that is its noise generator."""
    return {"generator": gen.get_state()}


def load_generator(state: dict[str, Any]) -> torch.Generator:
    """Inverse of :func:`generator_state`: a CPU generator resuming the saved draws."""
    if not isinstance(state, dict) or not isinstance(state.get("generator"), Tensor):
        raise ValueError("not a noise-generator carry: expected {'generator': <state tensor>}")
    gen = torch.Generator()
    gen.set_state(state["generator"])
    return gen
