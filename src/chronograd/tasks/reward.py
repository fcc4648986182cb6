"""A cued two-armed bandit with the reward at the end of the trial, and reward-based e-prop.

Each trial (``T = cue + delay + 1`` steps) shows one of two Poisson cue patterns (``channels``
input channels each, firing at ``rate`` per step during the first ``cue`` steps; background
noise at ``noise`` per step throughout). At the last step the agent picks an arm
``a ∈ {0, 1}`` from its policy ``π = softmax(logits_T)``; the arm named by the cue pays ``1``,
the other ``0``. Chance (a policy that ignores the cue) earns ``0.5`` per trial. The cue must be
held through the delay, so a network without memory is at chance.

Reward-based e-prop (Bellec et al. 2020, the actor-critic version, one decision per episode,
``γ = 1``): the readout gives two policy logits and a value ``V``; with ``δ = R − V_T`` (held
fixed) the surrogate loss at the decision step is ``ℓ = −δ log π_a + (c_V/2)(R − V_T)²``. Its
output error through the feedback matrix is the neuromodulator
``M_T = δ (B_π (π − 1_a) − c_V B_V)`` (:func:`~chronograd.traces.learning_signal.
actor_critic_modulator`), which meets e-prop's filtered eligibility traces:
``ΔW_ji ∝ −Σ_t M_t F_κ(e_ji)_t`` (e-prop with ``learning_signal="neuromodulator"``); the readout
learns from the surrogate loss (:func:`actor_critic_criterion`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from chronograd.objectives import Objective
from chronograd.rules.base import LearningRule
from chronograd.rules.driver import gradient
from chronograd.traces.learning_signal import actor_critic_modulator

__all__ = ["CueBandit", "actor_critic_criterion", "actor_critic_episode", "train_actor_critic"]


@dataclass(frozen=True)
class CueBandit:
    """The cued two-armed bandit (see the module docstring).

    Args:
        channels: input channels per cue pattern (input size ``2 · channels``).
        cue: steps the cue lasts; delay: silent steps between the cue and the decision.
        rate: the cue's firing probability per step; noise: the background's.
    """

    channels: int = 8
    cue: int = 8
    delay: int = 6
    rate: float = 0.5
    noise: float = 0.02

    def __post_init__(self) -> None:
        for name in ("channels", "cue"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(self.delay, int) or self.delay < 0:
            raise ValueError(f"delay must be an int >= 0, got {self.delay!r}")
        for name in ("rate", "noise"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {v!r}")

    @property
    def input_size(self) -> int:
        """Input channels: ``channels`` for each of the two cues."""
        return 2 * self.channels

    @property
    def seq_len(self) -> int:
        """Steps of one trial: the cue, the delay and the decision step."""
        return self.cue + self.delay + 1

    def sample(self, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(xs (T, B, 2·channels) of 0/1 spikes, the paying arm (B,))``."""
        arm = torch.randint(0, 2, (batch,), generator=generator)
        p = torch.full((self.seq_len, batch, self.input_size), self.noise)
        on = torch.zeros(batch, self.input_size)
        on[arm == 0, : self.channels] = 1.0
        on[arm == 1, self.channels :] = 1.0
        p[: self.cue] = torch.maximum(p[: self.cue], on[None] * self.rate)
        return torch.bernoulli(p, generator=generator), arm

    @staticmethod
    def reward(arm: Tensor, action: Tensor) -> Tensor:
        """``1`` where the action is the paying arm, else ``0``, ``(B,)``."""
        return (arm == action).to(torch.get_default_dtype())


def actor_critic_criterion(value_coef: float = 0.5) -> Callable[[Tensor, Tensor], Tensor]:
    """The surrogate loss as an objective criterion.

    Outputs ``(T, B, 3)`` (two logits, ``V``); targets ``(T, B, 4)``: the one-hot action, ``δ``
    and ``R`` (the same at every step; count only the decision step with ``last=1``). Returns
    ``−δ log π_a + (c_V/2)(R − V)²`` per step and sample, ``(T, B)``.
    """

    def criterion(outputs: Tensor, targets: Tensor) -> Tensor:
        logp = torch.log_softmax(outputs[..., :2], -1)
        a, delta, ret = targets[..., :2], targets[..., 2], targets[..., 3]
        return -delta * (a * logp).sum(-1) + 0.5 * value_coef * (ret - outputs[..., 2]) ** 2

    return criterion


def actor_critic_episode(
    model: nn.Module,
    rule: LearningRule,
    env: CueBandit,
    batch: int,
    generator: torch.Generator,
    value_coef: float = 0.5,
) -> tuple[dict[str, Tensor], Tensor]:
    """One batch of trials: act, get the rewards, and reward-based e-prop's gradient.

    ``rule`` is an :class:`~chronograd.rules.EProp` with ``learning_signal="neuromodulator"``.
    Returns ``(gradient, rewards (B,))``.
    """
    w = next(model.parameters())
    xs, arm = env.sample(batch, generator)
    xs = xs.to(device=w.device, dtype=w.dtype)
    arm = arm.to(w.device)
    with torch.no_grad():
        state = model.init_state(batch, device=w.device, dtype=w.dtype)  # type: ignore[operator]
        ys = []
        for t in range(xs.shape[0]):
            y, state = model(xs[t], state)
            ys.append(y)
        out = ys[-1]  # (B, 3) at the decision step
    logits, value = out[:, :2], out[:, 2]
    action = torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=generator)[:, 0]
    action = action.to(w.device)
    reward = env.reward(arm, action).to(w.dtype)
    delta = reward - value
    T = xs.shape[0]
    onehot = torch.nn.functional.one_hot(action, 2).to(w.dtype)
    target = torch.cat([onehot, delta[:, None], reward[:, None]], -1).expand(T, batch, 4)
    feedback = rule.feedback_matrix(model, rule.init(model, state))  # type: ignore[attr-defined]
    m = torch.zeros(T, batch, feedback.shape[0], device=w.device, dtype=w.dtype)
    # the objective's weight of the decision step (mean over the batch) scales M like the loss
    m[-1] = (
        actor_critic_modulator(
            logits, value, action, reward, feedback[:, :2], feedback[:, 2], value_coef
        )
        / batch
    )
    objective = Objective(actor_critic_criterion(value_coef), last=1)
    grads = gradient(rule, model, xs, {"target": target, "modulator": m}, objective)
    return grads, reward


def train_actor_critic(
    model: nn.Module,
    rule: LearningRule,
    env: CueBandit,
    *,
    iterations: int,
    batch: int = 32,
    lr: float = 1e-2,
    seed: int = 0,
    value_coef: float = 0.5,
) -> list[float]:
    """Train with reward-based e-prop (Adam); the mean reward of every batch of trials."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rewards = []
    for _ in range(iterations):
        grads, reward = actor_critic_episode(model, rule, env, batch, g, value_coef)
        for n, p in model.named_parameters():
            if n in grads:
                p.grad = grads[n]
        opt.step()
        opt.zero_grad(set_to_none=True)
        rewards.append(float(reward.mean()))
    return rewards
