"""Per-neuron trace recursions over a block of steps: the arithmetic of the trace rules.

Every trace of the trace engine is, per sample and neuron, a linear recursion over the ``S``
state variables of the neuron, with ``D_t`` (B, H, S, S) the neuron's own Jacobian
``∂h_t/∂h_{t-1}``::

    e_t  = scale · D_t e_{t-1} + src_scale · src_t                  (B, H, S) small traces
    eW_t = D_t eW_{t-1} + z_t ⊗ Df_t                                 (S, B, I, H) weight traces

:func:`small_traces` runs the first step by step (:func:`mix_small`); :func:`advance` runs the
second over a whole block at once by an exact regrouping (an adjoint recursion over the
block's ``S``-vectors, one batched matmul, one pass over the trace), returning the block's
gradient ``Σ_s <δ_s, eW_s> + <δ^prev_s, eW_{s-1}>``. D-RTRL (:mod:`chronograd.rules.drtrl`),
pp-prop (:mod:`chronograd.rules.pp_prop`) and e-prop's forward evaluation
(:mod:`chronograd.traces.eprop_evaluation`) share them. :func:`matvec` / :func:`matmul` are the
per-neuron ``S × S`` products.
"""

from __future__ import annotations

import torch
from torch import Tensor


def small_traces(
    e: Tensor, D: Tensor, src: Tensor, scale: float = 1.0, src_scale: float = 1.0
) -> Tensor:
    """Advance a ``(B, H, S)`` trace over a block in place and return its history.

    ``e_k = scale · D_k e_{k-1} + src_scale · src_k`` for ``D`` (K, B, H, S, S) and ``src``
    (K, B, H, S); returns ``(K + 1, B, H, S)``: ``[e_{-1}, e_0, ..., e_{K-1}]``.
    """
    hist = [e.clone()]
    for k in range(D.shape[0]):
        mix_small(e, D[k], src[k], scale, src_scale)
        hist.append(e.clone())
    return torch.stack(hist)


def mix_small(
    e: Tensor, D: Tensor, src: Tensor, scale: float = 1.0, src_scale: float = 1.0
) -> None:
    """In place ``e ← scale · (D e) + src_scale · src`` for ``(B, H, S)`` traces, ``D`` (B,H,S,S)."""
    D = D if D.dtype == e.dtype else D.to(e.dtype)
    if e.shape[-1] == 1:
        e.mul_(D[..., 0] if scale == 1.0 else D[..., 0] * scale)
    else:
        e.copy_(matvec(D, e) * scale)
    e.add_(src if src.dtype == e.dtype else src.to(e.dtype), alpha=src_scale)


def matvec(D: Tensor, v: Tensor, transpose: bool = False) -> Tensor:
    """Per-neuron ``D v`` (or ``Dᵀ v``): ``D`` (..., S, S), ``v`` (..., S) -> (..., S).

    ``S = 1`` is a plain product; otherwise one ``einsum`` (on the CPU about 4x faster than
    broadcasting and summing over the tiny ``S`` axis, for ``B·H`` blocks of ``S`` = 2 or 3).
    """
    if D.shape[-1] == 1:
        return D[..., 0] * v
    return torch.einsum("...ji,...j->...i" if transpose else "...ij,...j->...i", D, v)


def matmul(A: Tensor, B: Tensor) -> Tensor:
    """Per-neuron ``A B`` of ``(..., S, S)`` blocks (a batched matmul; ``S = 1``: a product)."""
    if A.shape[-1] == 1:
        return A * B
    return torch.matmul(A, B)


def advance(
    e: Tensor,
    z: Tensor,
    D: Tensor,
    Df: Tensor,
    delta: Tensor | None,
    prev: Tensor | None,
    fresh: bool = False,
) -> Tensor | None:
    """Advance a weight trace over ``K`` steps in place; return the steps' gradient ``(I, H)``.

    With steps ``s = 0..K-1``, ``e_s = D_s e_{s-1} + z_s ⊗ Df_s`` and ``e_{-1} = e`` (given)::

        Σ_s <δ_s, e_s> + <δ^prev_s, e_{s-1}>  =  <μ, e_{-1}> + Σ_s z_s ⊗ <Df_s, λ_s>
        λ_{K-1} = δ'_{K-1},  λ_s = δ'_s + D_{s+1}ᵀ λ_{s+1},  μ = D_0ᵀ λ_0 + δ^prev_0
        e_{K-1} = Q_{-1} e_{-1} + Σ_s z_s ⊗ Q_s Df_s,  Q_{K-1} = I,  Q_{s-1} = Q_s D_s

    (``δ'_s = δ_s + δ^prev_{s+1}``; products per sample and neuron, ``S × S``). This is the
    per-step recursion regrouped: the same gradient, with the ``(S, B, I, H)`` trace read and
    written once per block instead of every step; the rest is one matmul per block.

    Args:
        e: the trace ``(S, B, I, H)``, updated in place.
        z: ``(K, B, I)`` relation inputs; D: ``(K, B, H, S, S)``; Df: ``(K, B, H, S)``.
        delta: ``(K, B, H, S)`` learning signal, or None (no loss in this block).
        prev: ``(K, B, H, S)`` previous-state signal (pairs with the previous step's trace), or None.
        fresh: ``e`` is new (zero at the sequence start): it is written without being read.
    """
    dt = e.dtype
    S = e.shape[0]
    K = z.shape[0]
    D, Df, z = D.to(dt), Df.to(dt), z.to(dt)
    Z = z.permute(1, 2, 0)  # (B, I, K)
    g: Tensor | None = None
    if delta is not None or prev is not None:
        d = torch.zeros_like(Df) if delta is None else delta.to(dt).clone()
        if prev is not None:
            d[:-1] += prev[1:].to(dt)  # δ^prev_k pairs with e_{k-1}
        lam = [d[K - 1]]
        for k in range(K - 2, -1, -1):
            lam.append(d[k] + matvec(D[k + 1], lam[-1], transpose=True))
        lam.reverse()  # λ_k, (B, H, S)
        mu = matvec(D[0], lam[0], transpose=True)
        if prev is not None:
            mu = mu + prev[0].to(dt)
        Y = (Df * torch.stack(lam)).sum(-1)  # (K, B, H)
        B, I = Z.shape[0], Z.shape[1]
        g = z.reshape(K * B, I).t() @ Y.reshape(K * B, -1)  # (I, H)
        for a in range(S if not fresh else 0):  # <μ, e_{-1}>: one read of the trace
            for b in range(B):
                g.addcmul_(e[a, b], mu[b, :, a])
    Q = D[K - 1]  # Q_{K-2}
    F = [Df[K - 1], matvec(Q, Df[K - 2])] if K > 1 else [Df[0]]
    for k in range(K - 2, 0, -1):
        Q = matmul(Q, D[k])  # Q_{k-1}
        F.append(matvec(Q, Df[k - 1]))
    F.reverse()  # F[s] = Q_s Df_s
    Q = matmul(Q, D[0]) if K > 1 else D[0]  # Q_{-1}
    Fs = torch.stack(F, 1)  # (B, K, H, S)
    if fresh:
        for a in range(S):
            torch.bmm(Z, Fs[..., a], out=e[a])
    elif S == 1:
        e[0].mul_(Q[:, None, :, 0, 0]).baddbmm_(Z, Fs[..., 0])
    elif not bool(torch.triu(Q, diagonal=1).any()):
        # lower-triangular Q (e.g. ALIF with the reset's gradient stopped, or a readout-filtered
        # trace): in place, last component first, each reading only components not yet updated
        for a in range(S - 1, -1, -1):
            e[a].mul_(Q[:, None, :, a, a])
            for c in range(a):
                q = Q[:, None, :, a, c]
                if bool(q.any()):
                    e[a].addcmul_(e[c], q)
            e[a].baddbmm_(Z, Fs[..., a])
    else:
        new = torch.empty_like(e)
        for a in range(S):
            torch.mul(e[0], Q[:, None, :, a, 0], out=new[a])
            for c in range(1, S):
                new[a].addcmul_(e[c], Q[:, None, :, a, c])
            new[a].baddbmm_(Z, Fs[..., a])
        e.copy_(new)
    return g
