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


def rls_steps_(
    P: Tensor,
    steps: Sequence[tuple[Tensor, Tensor]],
    forgetting: float,
    batch_update: BatchUpdate = "sequential",
) -> Tensor:
    """Run the RLS recursion over consecutive update steps, updating ``P`` in place.

    ``P`` is modified in place: at ``I = 1000`` (FORCE's size) a fresh ``I × I`` matrix per step
    would cost more than the update itself. Both forms keep ``P`` symmetric by construction
    (``P −= s sᵀ`` with ``s = √c k``; ``P −= G Gᵀ`` with ``G = P Φᵀ L⁻ᵀ``, ``L Lᵀ = S``).

    Args:
        P: ``(I, I)`` inverse correlation matrix before the first step (updated in place).
        steps: for each step, ``(Φ, E)``: regressors ``(N, I)`` and a-priori errors ``(N, O)``,
            every error computed with the weights in force *before the first step* (the
            recursion brings them up to date itself). ``N`` may differ between steps.
        forgetting: ``λ ∈ (0, 1]``, applied once per step.
        batch_update: ``"sequential"`` rank-1 updates or one ``"woodbury"`` update per step.

    Returns:
        ``ΔW``, the change of ``W`` over all steps, ``(O, I)``.
    """
    if not steps:
        raise ValueError("rls_steps_ needs at least one step")
    out = steps[0][1].shape[-1]
    delta = torch.zeros(out, P.shape[0], device=P.device, dtype=P.dtype)
    for phi, err in steps:
        phi, err = phi.to(P.dtype), err.to(P.dtype)
        err = err + phi @ delta.T  # (N, O): errors with the weights updated so far
        if batch_update == "woodbury":
            delta += _woodbury_(P, phi, err, forgetting)
        else:
            delta += _sequential_(P, phi, err, forgetting)
    return delta


def _sequential_(P: Tensor, phi: Tensor, err: Tensor, forgetting: float) -> Tensor:
    """``N`` rank-1 updates of ``P`` in place, forgetting on the first; returns ``ΔW``.

    ``phi`` (N, I), ``err`` (N, O).
    """
    delta = torch.zeros(err.shape[1], phi.shape[1], device=P.device, dtype=P.dtype)
    for n in range(phi.shape[0]):
        lam = forgetting if n == 0 else 1.0
        x = phi[n]  # (I,)
        e = err[n] + delta @ x  # (O,)
        k = P @ x  # (I,)
        c = 1.0 / (lam + x @ k)  # c = 1 / (λ + φᵀ k) > 0
        delta.addr_(e, c * k, alpha=-1.0)  # ΔW -= c e kᵀ
        s = c.sqrt() * k
        P.addr_(s, s, alpha=-1.0)  # P -= c k kᵀ, exactly symmetric
        if lam != 1.0:
            P /= lam
    return delta


def _woodbury_(P: Tensor, phi: Tensor, err: Tensor, forgetting: float) -> Tensor:
    """One rank-``N`` update of ``P`` in place; returns ``ΔW``. ``phi`` (N, I), ``err`` (N, O)."""
    n = phi.shape[0]
    p_phi = P @ phi.T  # (I, N)
    s = forgetting * torch.eye(n, device=P.device, dtype=P.dtype) + phi @ p_phi  # (N, N) = S
    chol = torch.linalg.cholesky(s)  # S = L Lᵀ
    g = torch.linalg.solve_triangular(chol, p_phi.T, upper=False).T  # (I, N) = P Φᵀ L⁻ᵀ
    # K = P Φᵀ S⁻¹ = G L⁻¹, so ΔW = −Eᵀ Kᵀ = −Eᵀ L⁻ᵀ Gᵀ
    e_scaled = torch.linalg.solve_triangular(chol, err, upper=False)  # (N, O) = L⁻¹ E
    P.addmm_(g, g.T, alpha=-1.0)  # P -= K Φ P = G Gᵀ
    if forgetting != 1.0:
        P /= forgetting
    return -e_scaled.T @ g.T  # (O, I)


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
