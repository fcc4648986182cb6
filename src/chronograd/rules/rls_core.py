"""The recursive-least-squares recursion itself: pure tensor functions, no model in sight.

Every RLS strategy reduces to the same problem. A linear map ``W`` (``(O, I)``) sees, at each
update step ``s``, ``N`` rows: regressors ``φ_n`` (``I``) and their *a-priori* errors
``e_n = W φ_n − y_n`` (``O``). With a forgetting factor ``λ ∈ (0, 1]`` and ``P_0 = I / δ``, RLS
keeps ``P_s = (λ^s δ I + Σ_{r≤s} λ^{s−r} Φ_rᵀ Φ_r)⁻¹`` and ``W_s`` minimising::

    Σ_{r≤s} λ^{s−r} ‖Φ_r W_sᵀ − Y_r‖² + λ^s δ ‖W_s − W_0‖²

(the rows of one step share one weight: forgetting is applied once per step). Two ways to take a
step, equal up to rounding:

* ``"sequential"``: ``N`` rank-1 updates (textbook RLS; Sussillo & Abbott 2009 for FORCE)::

      k = P φ      c = 1 / (λ_n + φᵀ k)      W ← W − c e kᵀ      P ← (P − c k kᵀ) / λ_n

  with ``λ_n = λ`` for the first row of the step and ``1`` for the others, and each row's
  error brought up to date with the changes already made, ``e_n ← e_n + ΔW φ_n``.
* ``"woodbury"``: one rank-``N`` update (the matrix-inversion lemma)::

      S = λ I_N + Φ P Φᵀ      K = P Φᵀ S⁻¹      W ← W − Eᵀ Kᵀ      P ← (P − K Φ P) / λ

The forgetting factor *divides* ``P`` (NeuroTorch's ``RLS`` multiplies by it, which makes ``P``
shrink instead of re-inflating; that is not the textbook recursion).

The extended-Kalman strategies use the same functions with ``O = 1``: each row is one scalar
measurement ``e`` with its own regressor ``ψ = ∂o/∂θ`` and ``W`` is the parameter vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

BatchUpdate = Literal["sequential", "woodbury"]


def rls_steps(
    P: Tensor,
    steps: Sequence[tuple[Tensor, Tensor]],
    forgetting: float,
    batch_update: BatchUpdate = "sequential",
) -> tuple[Tensor, Tensor]:
    """Run the RLS recursion over consecutive update steps.

    Args:
        P: ``(I, I)`` inverse correlation matrix before the first step.
        steps: for each step, ``(Φ, E)``: regressors ``(N, I)`` and a-priori errors ``(N, O)``,
            every error computed with the weights in force *before the first step* (the
            recursion brings them up to date itself). ``N`` may differ between steps.
        forgetting: ``λ ∈ (0, 1]``, applied once per step.
        batch_update: ``"sequential"`` rank-1 updates or one ``"woodbury"`` update per step.

    Returns:
        ``(ΔW, P)``: the change of ``W`` ``(O, I)`` over all steps, and the new ``P``.
    """
    if not steps:
        raise ValueError("rls_steps needs at least one step")
    out = steps[0][1].shape[-1]
    delta = torch.zeros(out, P.shape[0], device=P.device, dtype=P.dtype)
    for phi, err in steps:
        phi, err = phi.to(P.dtype), err.to(P.dtype)
        err = err + phi @ delta.T  # (N, O): errors with the weights updated so far
        if batch_update == "woodbury":
            step, P = _woodbury(P, phi, err, forgetting)
        else:
            step, P = _sequential(P, phi, err, forgetting)
        delta = delta + step
        P = 0.5 * (P + P.T)  # keep P symmetric against rounding
    return delta, P


def _sequential(P: Tensor, phi: Tensor, err: Tensor, forgetting: float) -> tuple[Tensor, Tensor]:
    """``N`` rank-1 updates; forgetting on the first. ``phi`` (N, I), ``err`` (N, O)."""
    delta = torch.zeros(err.shape[1], phi.shape[1], device=P.device, dtype=P.dtype)
    for n in range(phi.shape[0]):
        lam = forgetting if n == 0 else 1.0
        x = phi[n]  # (I,)
        e = err[n] + delta @ x  # (O,)
        k = P @ x  # (I,)
        c = 1.0 / (lam + x @ k)
        delta = delta - c * torch.outer(e, k)
        P = (P - c * torch.outer(k, k)) / lam
    return delta, P


def _woodbury(P: Tensor, phi: Tensor, err: Tensor, forgetting: float) -> tuple[Tensor, Tensor]:
    """One rank-``N`` update. ``phi`` (N, I), ``err`` (N, O)."""
    n = phi.shape[0]
    p_phi = P @ phi.T  # (I, N)
    s = forgetting * torch.eye(n, device=P.device, dtype=P.dtype) + phi @ p_phi  # (N, N)
    gain = torch.linalg.solve(s, p_phi.T).T  # (I, N) = P Φᵀ S⁻¹ (S symmetric)
    delta = -err.T @ gain.T  # (O, I)
    P = (P - gain @ p_phi.T) / forgetting
    return delta, P


def initial_p(size: int, delta: float, *, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``P_0 = I / δ`` of shape ``(size, size)``."""
    return torch.eye(size, device=device, dtype=dtype) / delta


def p_bytes(size: int, dtype: torch.dtype) -> int:
    """Memory of a ``(size, size)`` matrix of ``dtype``, in bytes."""
    return size * size * torch.empty((), dtype=dtype).element_size()


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
