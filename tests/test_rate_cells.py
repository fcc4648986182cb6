"""Wilson–Cowan cell and the chaotic FORCE network: equations by hand, purity, Dale's law,
learnable time constants, BPTT training."""

import math

import pytest
import torch

from chronograd.cells import ChaoticRNN, LeakyReadout, Stack, WCState, WilsonCowan, dale_signs
from chronograd.objectives import Objective
from chronograd.rules import BPTT, gradient
from chronograd.sequence import unroll
from chronograd.testing import assert_pure_step, gradcheck_cell
from chronograd.training import Trainer

D = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    """Small sequential tensor work: one thread avoids contention on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_wilson_cowan_step_follows_the_equations():
    torch.manual_seed(0)
    cell = WilsonCowan(3, 4, dt=0.5, tau=torch.tensor([2.0, 3.0, 4.0, 5.0]), refractory=0.7,
                       threshold=0.2, activation="sigmoid").double()  # fmt: skip
    x = torch.randn(2, 3, dtype=D)
    r = torch.rand(2, 4, dtype=D)
    y, new = cell(x, WCState(r))
    W, W_in, mu = cell.recurrent_weight.detach(), cell.input_weight.detach(), 0.2
    tau = torch.tensor([2.0, 3.0, 4.0, 5.0], dtype=D)
    want = torch.empty(2, 4, dtype=D)
    for b in range(2):
        for j in range(4):  # W[pre, post]: input to j is sum_i r_i W[i, j]
            a = sum(r[b, i] * W[i, j] for i in range(4)) + sum(
                x[b, k] * W_in[k, j] for k in range(3)
            )
            f = 1.0 / (1.0 + math.exp(-(float(a) - mu)))
            drdt = -r[b, j] + (1 - 0.7 * r[b, j]) * f
            want[b, j] = r[b, j] + 0.5 / tau[j] * drdt
    torch.testing.assert_close(y, want)
    torch.testing.assert_close(new.r, want)


def test_wilson_cowan_is_neurotorch_form_and_keeps_rates_in_unit_interval():
    """κ = 1, sigmoid, dt <= τ: r_t = (1 − dt/τ) r + dt/τ (1 − r) σ(·) stays in [0, 1]."""
    torch.manual_seed(1)
    cell = WilsonCowan(2, 16, dt=1.0, tau=1.5, weight_scale=5.0).double()
    ys, _ = unroll(cell, 10 * torch.randn(50, 3, 2, dtype=D))
    assert bool((ys >= 0).all()) and bool((ys <= 1).all())


def test_wilson_cowan_step_is_pure_and_smooth():
    torch.manual_seed(2)
    cell = WilsonCowan(3, 5, learn_threshold=True, dale=0.6).double()
    x, state = torch.randn(2, 3, dtype=D), WCState(torch.rand(2, 5, dtype=D))
    assert_pure_step(cell, x, state)
    assert gradcheck_cell(cell, x, state)


def test_dale_signs_hold_by_construction_and_after_training():
    torch.manual_seed(3)
    signs = torch.tensor([1.0, 1.0, -1.0, 1.0, -1.0])
    model = Stack(WilsonCowan(2, 5, dale=signs), LeakyReadout(5, 1)).double()
    cell = model.layers[0]

    def check():
        W = cell.effective_weight()
        assert bool((W * signs.double()[:, None] >= 0).all())  # row i carries the sign of i

    check()
    x = torch.randn(20, 8, 2, dtype=D)
    y = torch.randn(20, 8, 1, dtype=D)
    Trainer(model, BPTT(), Objective("mse"), lr=0.5).fit([(x, y)], epochs=5)
    check()
    assert torch.equal(cell.sign, signs.double())
    assert torch.equal(dale_signs(5, 0.6), torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0]))


def test_time_constants_are_learnable_and_stay_positive():
    torch.manual_seed(4)
    cell = WilsonCowan(2, 3, tau=5.0)
    model = Stack(cell, LeakyReadout(3, 1)).double()
    x, y = torch.randn(15, 4, 2, dtype=D), torch.randn(15, 4, 1, dtype=D)
    g = gradient(BPTT(), model, x, y, Objective("mse"))
    assert g["layers.0.log_tau"].abs().sum() > 0
    with torch.no_grad():
        cell.log_tau.fill_(-40.0)  # any real value is a positive time constant
    assert bool((cell.tau > 0).all())
    frozen = WilsonCowan(2, 3, learn_tau=False)
    assert not frozen.log_tau.requires_grad and frozen.threshold.requires_grad is False


def test_wilson_cowan_trains_with_bptt():
    torch.manual_seed(5)
    teacher = WilsonCowan(2, 6, tau=3.0, weight_scale=2.0).double()
    x = torch.randn(30, 16, 2, dtype=D)
    with torch.no_grad():
        y, _ = unroll(teacher, x)
    model = WilsonCowan(2, 6, tau=6.0, weight_scale=2.0).double()
    obj = Objective("mse")
    with torch.no_grad():
        before = float(obj.loss(unroll(model, x)[0], y))
    Trainer(model, BPTT(), obj, lr=0.05).fit([(x, y)], epochs=60)
    with torch.no_grad():
        after = float(obj.loss(unroll(model, x)[0], y))
    assert after < 0.1 * before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tau": 0.0}, "tau must be > 0"),
        ({"dt": 0.0}, "dt must be > 0"),
        ({"refractory": -1.0}, "refractory"),
        ({"dale": 1.5}, "fraction of excitatory"),
        ({"dale": torch.tensor([1.0, 0.0, 1.0])}, "values in"),
    ],
)
def test_wilson_cowan_validates(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WilsonCowan(2, 3, **kwargs)


def test_chaotic_rnn_step_follows_the_equations_and_is_pure():
    cell = ChaoticRNN(2, 6, 2, g=1.5, p=0.5, tau=10.0, dt=2.0, readout_scale=1.0, seed=0).double()
    x = torch.randn(3, 6, dtype=D)
    z_prev = torch.randn(3, 2, dtype=D)
    u = torch.randn(3, 2, dtype=D)
    y, new = cell(u, (x, z_prev))
    drive = 1.5 * torch.tanh(x) @ cell.J + z_prev @ cell.w_fb + u @ cell.input_weight
    x1 = x + 0.2 * (-x + drive)
    torch.testing.assert_close(new.x, x1)
    torch.testing.assert_close(y, torch.tanh(x1) @ cell.readout.weight.T)
    torch.testing.assert_close(new.z, y)
    assert_pure_step(cell, u, (x, z_prev))
    assert not cell.J.requires_grad and cell.readout.weight.requires_grad
    assert 0 < int((cell.J != 0).sum()) < 36  # sparse with p = 0.5


def test_chaotic_rnn_is_chaotic_with_g_above_one_and_quiet_below():
    """Without feedback, g = 1.5 keeps irregular activity going; g = 0.5 decays to rest."""
    xs = torch.zeros(300, 1, 1, dtype=D)

    def late_activity(g):
        cell = ChaoticRNN(1, 150, 1, g=g, feedback=0.0, seed=1).double()
        with torch.no_grad():
            _, state = unroll(cell, xs)
        return float(torch.tanh(state.x).std())

    assert late_activity(1.5) > 0.2
    assert late_activity(0.5) < 1e-3


def test_chaotic_rnn_initial_state_is_fixed_and_dtype_agnostic():
    cell = ChaoticRNN(1, 5, seed=2)
    s1, s2 = cell.init_state(3), cell.init_state(3)
    assert torch.equal(s1.x, s2.x) and torch.equal(s1.x[0], s1.x[2]) and s1.x.abs().sum() > 0
    s = cell.double().init_state(2)
    assert s.x.dtype == D and s.z.shape == (2, 1)
