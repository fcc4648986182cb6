"""Property tests: over random shapes and hyperparameters, cells and rules either work (right
shapes, finite values, exactness where it must hold) or raise the documented error."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chronograd as cg
from chronograd import BPTT, TBPTT, Objective
from chronograd.cells import ALIF, GRU, LIF, LeakyReadout, LeakyRNN, Stack
from chronograd.testing import assert_pure_step

D = torch.float64
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

sizes = st.integers(min_value=-1, max_value=5)
steps = st.integers(min_value=1, max_value=6)
batch = st.integers(min_value=1, max_value=3)


def build(kind, i, h, hyper):
    if kind == "rnn":
        return LeakyRNN(i, h, alpha=hyper)
    if kind == "gru":
        return GRU(i, h)
    if kind == "lif":
        return LIF(i, h, tau_mem=hyper * 40 - 1, threshold=hyper + 0.05)
    if kind == "alif":
        return ALIF(i, h, tau_adapt=hyper * 400 - 1, beta=hyper - 0.2)
    return LeakyReadout(i, h, kappa=hyper)


@FAST
@given(
    kind=st.sampled_from(["rnn", "gru", "lif", "alif", "readout"]),
    i=sizes,
    h=sizes,
    hyper=st.floats(min_value=-0.5, max_value=1.5, allow_nan=False),
    T=steps,
    B=batch,
)
def test_cells_work_or_raise_value_error(kind, i, h, hyper, T, B):
    try:
        cell = build(kind, i, h, hyper).double()
    except ValueError as e:
        assert "must" in str(e)
        return
    x = torch.randn(T, B, i, dtype=D) * 2
    ys, state = cg.unroll(cell, x)
    assert ys.shape == (T, B, cell.output_size)
    assert torch.isfinite(ys).all()
    for leaf in cg._tree.tree_leaves(state):
        assert leaf.shape[0] == B and torch.isfinite(leaf).all()
    assert_pure_step(cell, x[0], cell.init_state(B))


@FAST
@given(
    k1=st.integers(-1, 7), k2=st.one_of(st.none(), st.integers(-1, 9)), T=st.integers(1, 9), B=batch
)
def test_tbptt_works_or_raises_and_is_bptt_when_the_chunk_covers_the_sequence(k1, k2, T, B):
    try:
        rule = TBPTT(k1, k2)
    except ValueError as e:
        assert "k1" in str(e) or "k2" in str(e)
        return
    torch.manual_seed(0)
    model = Stack(LIF(2, 4, tau_mem=4.0), LeakyReadout(4, 1, kappa=0.5)).double()
    xs, ys = torch.rand(T, B, 2, dtype=D) * 3, torch.randn(T, B, 1, dtype=D)
    g = cg.gradient(rule, model, xs, ys, Objective("mse"))
    assert set(g) == {n for n, _ in model.named_parameters()}
    assert all(torch.isfinite(v).all() for v in g.values())
    if k1 >= T and (k2 is None or k2 == k1):
        ref = cg.gradient(BPTT(), model, xs, ys, Objective("mse"))
        for n in g:
            torch.testing.assert_close(g[n], ref[n], rtol=1e-10, atol=1e-12)


@FAST
@given(
    T=st.integers(1, 8),
    last=st.one_of(st.none(), st.integers(1, 10)),
    reduction=st.sampled_from(["mean", "sum"]),
    cut=st.integers(1, 8),
)
def test_window_losses_add_up_for_sum_and_weights_are_normalised_for_mean(T, last, reduction, cut):
    obj = Objective("mse", last=last, reduction=reduction)
    o, y = torch.randn(T, 2, 1, dtype=D), torch.randn(T, 2, 1, dtype=D)
    w = obj.weights(T, 2, dtype=D)
    if reduction == "mean":
        assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-12)
    else:
        cut = min(cut, T)
        parts = obj.loss(o[:cut], y[:cut], start=0, total=T)
        if cut < T:
            parts = parts + obj.loss(o[cut:], y[cut:], start=cut, total=T)
        torch.testing.assert_close(parts, obj.loss(o, y))


RULE_OPTIONS = {
    "bptt": lambda k, a: {"checkpoint": k},
    "tbptt": lambda k, a: {"chunk_size": k},
    "rtrl": lambda k, a: {"chunk_size": k},
    "drtrl": lambda k, a: {
        "chunk_size": k,
        "mode": "multi-step" if a > 0.6 else "previous-state" if a > 0.3 else "single-step",
        "window": k if a > 0.6 else 1,
    },
    "pp-prop": lambda k, a: {
        "chunk_size": k,
        "decay": a,
        "mode": "multi-step" if a > 0.5 else "single-step",
        "window": 2 if a > 0.5 else 1,
    },
    "snap": lambda k, a: {"chunk_size": k, "n": 1 if a < 0.5 else 2},
    "uoro": lambda k, a: {"chunk_size": k, "seed": int(10 * a), "samples": 2},
    "kf-rtrl": lambda k, a: {"chunk_size": k, "seed": int(10 * a)},
    "ottt": lambda k, a: {"chunk_size": 1 if a > 0.5 else None, "decay": a},
    "sltt": lambda k, a: {"k": k},
    "fptt": lambda k, a: {"chunk_size": k, "alpha": a},
    "eprop": lambda k, a: {
        "chunk_size": k,
        "feedback": "random" if a > 0.5 else "symmetric",
        "trace_norm_clip": a,
        "rate_target": a / 10,
    },
    "ostl": lambda k, a: {"chunk_size": k, "recurrent": a > 0.5},
    "otpe": lambda k, a: {"chunk_size": k},
    "osttp": lambda k, a: {"chunk_size": k, "feedback_norm_clip": a},
}
SPIKING_STACK = ("ostl", "otpe", "osttp")  # Stack(LIF, ..., LeakyReadout) only


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(RULE_OPTIONS)),
    k=st.one_of(st.integers(1, 6), st.integers(-1, 0)),  # mostly valid, sometimes not
    a=st.one_of(st.floats(0.0, 0.95), st.floats(-0.5, 1.5, allow_nan=False)),
    hidden=st.integers(1, 4),
    T=st.integers(1, 7),
    B=batch,
    cell=st.sampled_from(["lif", "alif", "rnn"]),
)
def test_rules_work_or_raise_the_documented_error(name, k, a, hidden, T, B, cell):
    try:
        rule = cg.rules.get(name, **RULE_OPTIONS[name](k, a))
    except (ValueError, TypeError) as e:
        assert "must" in str(e) or "got" in str(e)
        return
    torch.manual_seed(0)
    if cell == "rnn":
        core = LeakyRNN(2, hidden, recurrent=False)
    elif cell == "lif":
        core = LIF(2, hidden, recurrent=False, tau_mem=3.0)
    else:
        core = ALIF(2, hidden, recurrent=False, tau_mem=3.0, tau_adapt=20.0, beta=0.2)
    model = Stack(core, LeakyReadout(hidden, 1)).double()
    xs, ys = torch.rand(T, B, 2, dtype=D) * 3, torch.randn(T, B, 1, dtype=D)
    if name == "sltt" and k > T:  # SLTT-K back-propagates at K <= T steps
        with pytest.raises(ValueError, match=r"use k <= "):
            cg.gradient(rule, model, xs, ys, Objective("mse"))
        return
    if name == "eprop" and cell == "rnn":  # e-prop is defined for spiking LIF/ALIF layers
        with pytest.raises(TypeError, match="LIF"):
            cg.gradient(rule, model, xs, ys, Objective("mse"))
        return
    if name == "kf-rtrl" and cell != "rnn":  # KF-RTRL is defined for LeakyRNN layers
        with pytest.raises(TypeError, match="LeakyRNN"):
            cg.gradient(rule, model, xs, ys, Objective("mse"))
        return
    if name in SPIKING_STACK and cell != "lif":
        with pytest.raises(TypeError, match="LIF"):
            cg.gradient(rule, model, xs, ys, Objective("mse"))
        return
    g = cg.gradient(rule, model, xs, ys, Objective("mse"))
    params = dict(model.named_parameters())
    for n, v in g.items():
        assert v.shape == params[n].shape and torch.isfinite(v).all(), n
