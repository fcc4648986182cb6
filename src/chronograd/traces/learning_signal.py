"""Learning signals of the trace rules: the error through feedback, or a neuromodulator.

A trace rule's hidden-weight gradient is ``Σ_t Σ_b L^b_{j,t} ε̃^b_{ji,t}``: an eligibility trace
``ε̃`` (e-prop's readout-filtered ``F_κ(e)``) met by a learning signal ``L_t`` (B, H). The
signal is a plug-in:

* ``"error"`` (default): ``L_t = B ∂ℓ_t/∂y_t``, the output error through the rule's feedback
  matrix ``B`` (H, O): ``W_outᵀ`` for the gradient's own signal (symmetric feedback), or a fixed
  random matrix (random feedback, :mod:`chronograd.traces.feedback`).
* ``"neuromodulator"``: ``L_t = M_t``, a third factor given with the data, so that
  ``ΔW_ji ∝ −Σ_t M_t · ε̃_{ji,t}``. ``M_t`` is ``(B,)`` (one global signal per sample, e.g. a
  reward-prediction error, broadcast to every neuron) or ``(B, H)`` (one per neuron). The
  targets are then a dict ``{"target": y*, "modulator": M}`` with ``M`` time first,
  ``(T, B)`` or ``(T, B, H)``; ``"target"`` feeds the objective (the loss and the readout's
  gradient) as before.

With ``M_t = W_outᵀ ∂ℓ_t/∂y_t`` the neuromodulated rule is the error-driven one
(:func:`error_modulator` builds it), which is the oracle of the plug-in.

Reward-based e-prop (Bellec et al. 2020, actor-critic): :func:`actor_critic_modulator` builds
``M_t = δ_t (B_π (π_t − 1_{a_t}) − c_V B_V)`` from the reward-prediction error
``δ_t = R − V_t`` of an episode with its reward ``R`` at the end (``γ = 1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

LEARNING_SIGNALS = ("error", "neuromodulator")


def check_learning_signal(name: object) -> str:
    """``name`` if it is one of :data:`LEARNING_SIGNALS`, else ``ValueError``."""
    if name not in LEARNING_SIGNALS:
        raise ValueError(
            f"learning_signal must be one of {', '.join(LEARNING_SIGNALS)}, got {name!r}"
        )
    return str(name)


def split_targets(kind: str, targets: Any) -> tuple[Any, Tensor | None]:
    """``(objective targets, M or None)``: with ``"neuromodulator"`` the targets must be
    ``{"target": y*, "modulator": M}`` (``M`` time first)."""
    if kind != "neuromodulator":
        return targets, None
    if not isinstance(targets, Mapping) or set(targets) != {"target", "modulator"}:
        got = sorted(targets) if isinstance(targets, Mapping) else type(targets).__name__
        raise TypeError(
            "learning_signal='neuromodulator' reads M_t from the targets: pass "
            "{'target': y* (T, B, ...), 'modulator': M (T, B) or (T, B, H)}, got " + str(got)
        )
    m = targets["modulator"]
    if not isinstance(m, Tensor) or not m.is_floating_point():
        raise TypeError(f"the modulator must be a floating tensor, got {type(m).__name__}")
    return targets["target"], m


def modulator_signal(m: Tensor, hidden: int) -> Tensor:
    """``M`` (K, B) or (K, B, H) as the signal ``L`` (K, B, H) (a global ``M`` broadcast)."""
    if m.dim() == 2:
        return m[..., None].expand(*m.shape, hidden)
    if m.dim() == 3 and m.shape[-1] == hidden:
        return m
    raise ValueError(
        f"the modulator M must be (T, B) or (T, B, {hidden}) (one value per sample, or per "
        f"hidden neuron), got {tuple(m.shape)}"
    )


def hidden_signal(gy: Tensor, feedback: Tensor, modulator: Tensor | None) -> Tensor:
    """``L`` (K, B, H): ``M`` if given, else ``B ∂ℓ/∂y`` (``gy`` (K, B, O), ``feedback`` (H, O))."""
    if modulator is not None:
        return modulator_signal(modulator.to(gy.dtype), feedback.shape[0])
    return gy @ feedback.t().to(gy.dtype)


def error_modulator(gy: Tensor, feedback: Tensor) -> Tensor:
    """``M_t = B ∂ℓ_t/∂y_t`` (T, B, H): the neuromodulator equal to the error-driven signal."""
    return gy @ feedback.t().to(gy.dtype)


def actor_critic_modulator(
    logits: Tensor,
    value: Tensor,
    action: Tensor,
    reward: Tensor,
    feedback_policy: Tensor,
    feedback_value: Tensor,
    value_coef: float = 0.5,
) -> Tensor:
    """Reward-based e-prop's learning signal at the decision step, ``(B, H)``.

    For the surrogate loss ``ℓ = −δ log π_a + (c_V/2)(R − V)²`` (``δ = R − V`` held fixed)
    ``∂ℓ/∂logits = δ (π − 1_a)`` and ``∂ℓ/∂V = −c_V δ``, so ``M = δ (B_π (π − 1_a) − c_V B_V)``.

    Args:
        logits: ``(B, A)`` policy logits; value: ``(B,)`` the critic's ``V``.
        action: ``(B,)`` the actions taken; reward: ``(B,)`` the episode's reward.
        feedback_policy: ``B_π`` (H, A); feedback_value: ``B_V`` (H,).
        value_coef: ``c_V``.
    """
    delta = (reward - value).detach()
    pi = torch.softmax(logits.detach(), -1)
    onehot = torch.nn.functional.one_hot(action.long(), logits.shape[-1]).to(pi.dtype)
    err = delta[:, None] * (pi - onehot)  # (B, A)
    return err @ feedback_policy.t() - value_coef * delta[:, None] * feedback_value[None, :]
