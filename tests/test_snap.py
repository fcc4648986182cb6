"""SnAp-n (float64): exact RTRL once the pattern saturates, D-RTRL where their traces coincide."""

import pytest
import torch

import chronograd as cg
from chronograd.cells import GRU, LIF, DiagonalRNN, LeakyReadout, LeakyRNN, Stack
from chronograd.rules import DRTRL, RTRL, SnAp
from chronograd.rules.snap import pattern_size, sparsity_pattern

D = torch.float64
T, B = 7, 2
SUM = cg.Objective("mse", reduction="sum")


def data(o=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, 3, generator=g, dtype=D) * 2, torch.randn(T, B, o, generator=g, dtype=D)


def rel(a, b):
    return max(((a[n] - b[n]).norm() / b[n].norm()).item() for n in b)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Stack(LeakyRNN(3, 4, alpha=0.3), LeakyReadout(4, 2)),
        lambda: Stack(GRU(3, 4), LeakyReadout(4, 2, kappa=0.5)),
        lambda: Stack(LIF(3, 4, tau_mem=3.0, threshold=0.5), LeakyReadout(4, 2)),
    ],
    ids=["rnn", "gru", "lif"],
)
def test_saturated_pattern_is_exact_rtrl_and_snap1_is_not(make):
    torch.manual_seed(0)
    model = make().double()
    xs, ys = data()
    exact = cg.gradient(RTRL(), model, xs, ys, SUM)
    for n in (3, 10):
        got = cg.gradient(SnAp(n=n), model, xs, ys, SUM)
        for k in exact:
            torch.testing.assert_close(got[k], exact[k], rtol=1e-10, atol=1e-12)
    if not isinstance(model.layers[0], LIF):  # (the LIF layer barely spikes on these inputs)
        assert rel(cg.gradient(SnAp(n=1), model, xs, ys, SUM), exact) > 1e-3


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_snap1_is_drtrl_one_step_windows_where_the_traces_coincide(alpha):
    """With ``W_hh``'s diagonal zero, SnAp-1's influence is D-RTRL's trace (the recurrent
    matmul's own-unit term vanishes); the loss of each step sees the full step in both."""
    torch.manual_seed(0)
    cell = LeakyRNN(3, 4, alpha=alpha).double()
    with torch.no_grad():
        cell.recurrent.weight.fill_diagonal_(0.0)
    xs, ys = data(o=4)
    a = cg.gradient(SnAp(n=1), cell, xs, ys, SUM)
    b = cg.gradient(DRTRL(mode="multi-step", window=1), cell, xs, ys, SUM)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "core",
    [
        lambda: LeakyRNN(3, 4, alpha=0.3, recurrent=False),
        lambda: LIF(3, 4, recurrent=False, tau_mem=3.0, threshold=0.5),
        lambda: DiagonalRNN(3, 4, activation="tanh"),
    ],
)
def test_snap1_equals_drtrl_and_bptt_without_recurrent_weights(core):
    torch.manual_seed(0)
    model = Stack(core(), LeakyReadout(4, 2)).double()
    xs, ys = data()
    a = cg.gradient(SnAp(n=1), model, xs, ys, SUM)
    for ref in (
        cg.gradient(DRTRL(), model, xs, ys, SUM),
        cg.gradient(cg.BPTT(), model, xs, ys, SUM),
    ):
        for k in a:
            torch.testing.assert_close(a[k], ref[k], rtol=1e-10, atol=1e-12)


def test_pattern_sizes_and_chunks():
    torch.manual_seed(0)
    H, I = 5, 3
    cell = LeakyRNN(I, H).double()
    xs, ys = data(o=H)
    state = cell.init_state(B, dtype=D)
    names = [n for n, _ in cell.named_parameters()]
    P = sum(p.numel() for p in cell.parameters())
    assert pattern_size(sparsity_pattern(cell, xs[0], state, names, 1)) == P  # one unit each
    assert pattern_size(sparsity_pattern(cell, xs[0], state, names, 2)) == H * P  # dense
    whole = cg.gradient(SnAp(n=1), cell, xs, ys, SUM)
    parts = cg.gradient(SnAp(n=1, chunk_size=3), cell, xs, ys, SUM)
    for k in whole:
        torch.testing.assert_close(parts[k], whole[k], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="n must be a positive int"):
        SnAp(n=0)
    assert cg.rules.get("snap", n=2).n == 2
