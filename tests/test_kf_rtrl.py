"""KF-RTRL (float64): unbiased (mean over seeded draws converges to RTRL), reproducible, lower
variance than UORO, defined for LeakyRNN models only."""

import io

import pytest
import torch

import chronograd as cg
from chronograd.cells import GRU, LIF, LeakyReadout, LeakyRNN, Map, Stack
from chronograd.rules import KFRTRL, RTRL, UORO, Chunk
from chronograd.sequence import Span

D = torch.float64
T, B = 6, 2
SUM = cg.Objective("mse", reduction="sum")


def data(o=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, 3, generator=g, dtype=D) * 2, torch.randn(T, B, o, generator=g, dtype=D)


def flat(g):
    return torch.cat([v.reshape(-1) for _, v in sorted(g.items())])


@pytest.mark.parametrize(
    "make",
    [
        lambda: Stack(LeakyRNN(3, 4, alpha=0.3), LeakyReadout(4, 2)),
        lambda: Stack(LeakyRNN(3, 4), Map(torch.nn.Linear(4, 2))),
    ],
    ids=["leaky", "tanh-map"],
)
def test_mean_over_seeded_draws_converges_to_rtrl(make):
    """8 seeds x 128 vectorised draws; the overall mean's squared error stays under ``4 s² / 8``
    (``s²``: the spread of the seed means) and under 2% of RTRL's norm."""
    torch.manual_seed(0)
    model = make().double()
    xs, ys = data()
    exact = flat(cg.gradient(RTRL(), model, xs, ys, SUM))
    means = torch.stack(
        [flat(cg.gradient(KFRTRL(seed=s, samples=128), model, xs, ys, SUM)) for s in range(8)]
    )
    mean = means.mean(0)
    spread = ((means - mean) ** 2).sum(0).sum() / 7
    err2 = ((mean - exact) ** 2).sum()
    assert err2 < 4 * spread / 8, (err2, spread)
    assert err2.sqrt() < 0.02 * exact.norm()


def test_lower_variance_than_uoro_and_reproducible():
    torch.manual_seed(0)
    model = Stack(LeakyRNN(3, 4), LeakyReadout(4, 2)).double()
    xs, ys = data()
    exact = flat(cg.gradient(RTRL(), model, xs, ys, SUM))
    kf = flat(cg.gradient(KFRTRL(seed=1, samples=64), model, xs, ys, SUM))
    uo = flat(cg.gradient(UORO(seed=1, samples=64), model, xs, ys, SUM))
    assert (kf - exact).norm() < (uo - exact).norm()
    again = flat(cg.gradient(KFRTRL(seed=1, samples=64), model, xs, ys, SUM))
    assert torch.equal(kf, again)
    parts = flat(cg.gradient(KFRTRL(seed=1, samples=64, chunk_size=4), model, xs, ys, SUM))
    torch.testing.assert_close(parts, kf, rtol=1e-10, atol=1e-12)


def test_generator_state_is_checkpointed():
    model = LeakyRNN(3, 4).double()
    xs, ys = data(o=4)
    rule = KFRTRL(seed=2)
    chunk = Chunk(xs, ys, Span(0, T, T))
    state = model.init_state(B, dtype=D)
    carry = rule.update(model, chunk, state, rule.init(model, state), SUM).carry
    buf = io.BytesIO()
    torch.save(rule.carry_state_dict(carry), buf)
    buf.seek(0)
    loaded = rule.load_carry_state_dict(model, torch.load(buf, weights_only=True))
    one = rule.update(model, chunk, state, rule.start_sequence(model, state, carry), SUM)
    two = rule.update(model, chunk, state, rule.start_sequence(model, state, loaded), SUM)
    for n in one.grads:
        assert torch.equal(one.grads[n], two.grads[n])


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (Stack(GRU(3, 4), LeakyReadout(4, 2)), "one linear map"),
        (LIF(3, 4), "one linear map"),
        (Stack(LeakyRNN(3, 4), LeakyReadout(4, 2, kappa=0.5)), "memoryless"),
    ],
)
def test_other_cells_are_refused_with_the_fix(model, match):
    xs, ys = data()
    with pytest.raises(TypeError, match=match) as info:
        cg.gradient(KFRTRL(), model.double(), xs, ys, SUM)
    assert "uoro" in str(info.value)
    assert isinstance(cg.rules.get("kf-rtrl", samples=2), KFRTRL)
