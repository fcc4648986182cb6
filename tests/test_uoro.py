"""UORO (float64): unbiased (the mean over seeded draws converges to RTRL), reproducible, and its
generator checkpointed."""

import io

import pytest
import torch

import chronograd as cg
from chronograd.cells import GRU, LIF, LeakyReadout, LeakyRNN, Stack
from chronograd.rules import RTRL, UORO, Chunk
from chronograd.sequence import Span

D = torch.float64
T, B = 6, 2
SUM = cg.Objective("mse", reduction="sum")


def data(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, 3, generator=g, dtype=D) * 2, torch.randn(T, B, 2, generator=g, dtype=D)


def flat(g):
    return torch.cat([v.reshape(-1) for _, v in sorted(g.items())])


@pytest.mark.parametrize(
    "core", [lambda: LeakyRNN(3, 4, alpha=0.3), lambda: GRU(3, 4)], ids=["rnn", "gru"]
)
def test_mean_over_seeded_draws_converges_to_rtrl(core):
    """8 seeds x 256 vectorised draws (2048 in all). With ``s²`` the spread of the 8 seed means
    (an estimate of the variance of one seed's mean), the overall mean's squared error must stay
    under ``4 s² / 8`` (twice the standard error in norm) and under 5% of RTRL's norm; the error of
    32 draws is at least 4x larger (``1/sqrt(R)``)."""
    torch.manual_seed(0)
    model = Stack(core(), LeakyReadout(4, 2)).double()
    xs, ys = data()
    exact = flat(cg.gradient(RTRL(), model, xs, ys, SUM))
    means = torch.stack(
        [flat(cg.gradient(UORO(seed=s, samples=256), model, xs, ys, SUM)) for s in range(8)]
    )
    mean = means.mean(0)
    spread = ((means - mean) ** 2).sum(0).sum() / 7
    err2 = ((mean - exact) ** 2).sum()
    assert err2 < 4 * spread / 8, (err2, spread)
    assert err2.sqrt() < 0.05 * exact.norm()
    few = flat(cg.gradient(UORO(seed=0, samples=32), model, xs, ys, SUM))
    assert (few - exact).norm() > 4 * err2.sqrt()


def test_unbiased_on_a_spiking_network_too():
    torch.manual_seed(0)
    model = Stack(LIF(3, 4, tau_mem=3.0, threshold=0.5), LeakyReadout(4, 2, kappa=0.5)).double()
    xs, ys = data()
    exact = flat(cg.gradient(RTRL(), model, xs, ys, SUM))
    got = flat(cg.gradient(UORO(seed=0, samples=1024), model, xs, ys, SUM))
    assert (got - exact).norm() < 0.08 * exact.norm()


def test_a_fixed_seed_is_reproducible_and_seeds_differ():
    torch.manual_seed(0)
    model = Stack(LeakyRNN(3, 4), LeakyReadout(4, 2)).double()
    xs, ys = data()
    a = cg.gradient(UORO(seed=5), model, xs, ys, SUM)
    b = cg.gradient(UORO(seed=5), model, xs, ys, SUM)
    c = cg.gradient(UORO(seed=6), model, xs, ys, SUM)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    # chunks carry (h̃, θ̃) and the generator: the same estimate, split into updates
    parts = cg.gradient(UORO(seed=5, chunk_size=2), model, xs, ys, SUM)
    for n in a:
        torch.testing.assert_close(parts[n], a[n], rtol=1e-10, atol=1e-12)


def test_generator_state_is_checkpointed():
    torch.manual_seed(0)
    model = Stack(LeakyRNN(3, 4), LeakyReadout(4, 2)).double()
    xs, ys = data()
    rule = UORO(seed=3)
    chunk = Chunk(xs, ys, Span(0, T, T))
    state = model.init_state(B, dtype=D)
    carry = rule.update(model, chunk, state, rule.init(model, state), SUM).carry
    buf = io.BytesIO()
    torch.save(rule.carry_state_dict(carry), buf)
    buf.seek(0)
    loaded = rule.load_carry_state_dict(model, torch.load(buf, weights_only=True))
    one = rule.update(model, chunk, state, rule.start_sequence(model, state, carry), SUM)
    two = rule.update(model, chunk, state, rule.start_sequence(model, state, loaded), SUM)
    fresh = rule.update(model, chunk, state, rule.init(model, state), SUM)
    for n in one.grads:
        assert torch.equal(one.grads[n], two.grads[n])
    assert any(not torch.equal(one.grads[n], fresh.grads[n]) for n in one.grads)


def test_options_are_checked():
    with pytest.raises(ValueError, match="seed must be"):
        UORO(seed=-1)
    with pytest.raises(ValueError, match="samples must be"):
        UORO(samples=0)
    assert isinstance(cg.rules.get("uoro", seed=2), UORO)
