"""Reward-based e-prop (tasks/reward.py) on the cued two-armed bandit: the neuromodulated
update is e-prop on the actor-critic surrogate loss, and it learns above chance."""

import pytest
import torch

import chronograd as cg
from chronograd.cells import LIF, LeakyReadout, Stack
from chronograd.tasks.reward import (
    CueBandit,
    actor_critic_criterion,
    actor_critic_episode,
    train_actor_critic,
)

D = torch.float64


def agent(env, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    core = LIF(env.input_size, 24, tau_mem=10.0, threshold=0.5)
    return Stack(core, LeakyReadout(24, 3, kappa=0.0)).to(dtype)


def test_the_modulated_update_is_eprop_on_the_surrogate_loss():
    env = CueBandit(cue=4, delay=3)
    model = agent(env, D)
    rule = cg.rules.EProp(learning_signal="neuromodulator")  # symmetric feedback
    got, reward = actor_critic_episode(model, rule, env, 6, torch.Generator().manual_seed(3))
    # the same trials again: inputs, actions and rewards from the same generator
    g = torch.Generator().manual_seed(3)
    xs, arm = env.sample(6, g)
    xs = xs.to(D)
    with torch.no_grad():
        out, _ = cg.unroll(model, xs)
    logits, value = out[-1, :, :2], out[-1, :, 2]
    action = torch.multinomial(torch.softmax(logits, -1), 1, generator=g)[:, 0]
    r = env.reward(arm, action).to(D)
    torch.testing.assert_close(r, reward)
    onehot = torch.nn.functional.one_hot(action, 2).to(D)
    target = torch.cat([onehot, (r - value)[:, None], r[:, None]], -1).expand(xs.shape[0], 6, 4)
    objective = cg.Objective(actor_critic_criterion(), last=1)
    want = cg.gradient(cg.rules.EProp(), model, xs, target, objective)
    assert float(want["layers.0.input.weight"].abs().sum()) > 1e-4
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-9, atol=1e-12, msg=n)


def test_reward_based_eprop_learns_above_chance():
    env = CueBandit(cue=6, delay=4)
    model = agent(env)
    rule = cg.rules.EProp(learning_signal="neuromodulator", feedback="random")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only contend on a loaded machine
    try:
        rewards = train_actor_critic(model, rule, env, iterations=40, batch=32, lr=2e-2, seed=3)
    finally:
        torch.set_num_threads(threads)
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    assert first < 0.7 < 0.8 < last, (first, last)  # chance is 0.5


def test_bad_bandit_options():
    with pytest.raises(ValueError, match="channels must be a positive int"):
        CueBandit(channels=0)
    with pytest.raises(ValueError, match="rate must be a probability"):
        CueBandit(rate=1.5)
