"""braintrace's multi-step mode of D-RTRL and pp-prop: reverse mode inside windows, traces across
(float64 oracles)."""

import pytest
import torch

import chronograd as cg
from chronograd.cells import ALIF, GRU, LIF, DiagonalRNN, LeakyReadout, LeakyRNN, Stack
from chronograd.rules import DRTRL, PPProp
from chronograd.testing import assert_matches_bptt

D = torch.float64
T, B = 9, 3
SUM = cg.Objective("mse", reduction="sum")


def data(i=4, o=2, T=T, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, i, generator=g, dtype=D) * 2, torch.randn(T, B, o, generator=g, dtype=D)


def rel(a, b):
    return max(((a[n] - b[n]).norm() / b[n].norm()).item() for n in b)


MODELS = {
    "rnn": lambda: Stack(LeakyRNN(4, 6, alpha=0.3), LeakyReadout(6, 2)).double(),
    "gru": lambda: Stack(GRU(4, 5), LeakyReadout(5, 2, kappa=0.5)).double(),
    "lif": lambda: Stack(LIF(4, 6, tau_mem=4.0, threshold=0.5), LeakyReadout(6, 2)).double(),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("rule", [DRTRL, PPProp])
def test_one_window_over_the_sequence_is_bptt(name, rule):
    torch.manual_seed(0)
    model = MODELS[name]()
    assert_matches_bptt(rule(mode="multi-step", window=T), model, *data(), SUM, rtol=1e-10)
    assert_matches_bptt(rule(mode="multi-step", window=50), model, *data(), SUM, rtol=1e-10)


def test_one_step_windows_are_the_formula_by_hand_on_a_three_neuron_rnn():
    """``∇θ = Σ_t ∂ℓ_t/∂θ|_{h_{t-1}} + contract(∂ℓ_t/∂h_{t-1}, ε_{t-1})`` with D-RTRL's traces
    of a tanh RNN (``D = 0``: ``ε_t[h, (h, i)] = z_t[i] (1 - h_t[h]²)``)."""
    torch.manual_seed(3)
    model = LeakyRNN(2, 3, alpha=0.0).double()
    xs, ys = data(i=2, o=3, T=6)
    U, b = model.input.weight.detach(), model.input.bias.detach()
    W = model.recurrent.weight.detach()
    hs = [torch.zeros(B, 3, dtype=D)]
    for x in xs:
        hs.append(torch.tanh(x @ U.T + b + hs[-1] @ W.T))
    gU, gW, gb = torch.zeros_like(U), torch.zeros_like(W), torch.zeros_like(b)
    for t in range(len(xs)):
        h_prev, h = hs[t], hs[t + 1]
        a = (1 - h**2) * 2 * (h - ys[t]) / 3  # ∂ℓ_t/∂(pre-activation), ℓ_t = Σ_b mean (h - y)²
        gU += a.T @ xs[t]
        gW += a.T @ h_prev
        gb += a.sum(0)
        if t > 0:  # ε_{t-1}: the trace after step t-1
            c = (a @ W) * (1 - h_prev**2)  # ∂ℓ_t/∂h_{t-1}, times ε's per-unit factor
            gU += c.T @ xs[t - 1]
            gW += c.T @ hs[t - 1]
            gb += c.sum(0)
    got = cg.gradient(DRTRL(mode="multi-step", window=1), model, xs, ys, SUM)
    for n, want in (("input.weight", gU), ("recurrent.weight", gW), ("input.bias", gb)):
        torch.testing.assert_close(got[n], want, rtol=1e-12, atol=1e-13)
    # and it is not single-step (which drops ∂ℓ_t/∂h_{t-1} through the recurrent weights)
    single = cg.gradient(DRTRL(), model, xs, ys, SUM)
    assert (single["recurrent.weight"] - gW).norm() > 1e-3 * gW.norm()


@pytest.mark.parametrize(
    "core",
    [
        lambda: LeakyRNN(4, 6, alpha=0.3, recurrent=False),
        lambda: LIF(4, 6, recurrent=False, tau_mem=4.0, threshold=0.5),
        lambda: ALIF(4, 6, recurrent=False, tau_mem=4.0, threshold=0.5, tau_adapt=8.0, beta=0.3),
        lambda: DiagonalRNN(4, 6, activation="tanh"),
    ],
)
@pytest.mark.parametrize("window", [1, 2, 4])
def test_exact_on_models_without_recurrent_weights(core, window):
    torch.manual_seed(0)
    model = Stack(core(), LeakyReadout(6, 2)).double()
    assert_matches_bptt(DRTRL(mode="multi-step", window=window), model, *data(), SUM, rtol=1e-9)


@pytest.mark.parametrize("name", ["rnn", "gru"])
def test_closer_to_bptt_than_single_step_and_closer_with_longer_windows(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    xs, ys = data(T=12)
    ref = cg.gradient(cg.BPTT(), model, xs, ys, SUM)
    errs = [rel(cg.gradient(DRTRL(), model, xs, ys, SUM), ref)]
    for k in (1, 3, 6):
        errs.append(rel(cg.gradient(DRTRL(mode="multi-step", window=k), model, xs, ys, SUM), ref))
    assert errs == sorted(errs, reverse=True), errs
    assert errs[-1] < 0.5 * errs[0]


@pytest.mark.parametrize("rule", [DRTRL, PPProp])
def test_chunks_that_are_multiples_of_the_window_only_split_the_gradient(rule):
    torch.manual_seed(0)
    model, (xs, ys) = MODELS["lif"](), data(T=12)
    whole = cg.gradient(rule(mode="multi-step", window=3), model, xs, ys, SUM)
    for chunk in (3, 6):
        parts = cg.gradient(rule(mode="multi-step", window=3, chunk_size=chunk), model, xs, ys, SUM)
        for n in whole:
            torch.testing.assert_close(parts[n], whole[n], rtol=1e-10, atol=1e-12)


def test_options_are_checked():
    with pytest.raises(ValueError, match="window"):
        DRTRL(mode="multi-step", window=0)
    with pytest.raises(ValueError, match="window=3 must go with mode='multi-step'"):
        PPProp(window=3)
    with pytest.raises(ValueError, match="mode must be one of"):
        PPProp(mode="previous-state")
    with pytest.raises(ValueError, match="readout='filter'"):
        DRTRL(mode="multi-step", readout="filter")
    assert cg.rules.get("drtrl", mode="multi-step", window=4).window == 4
