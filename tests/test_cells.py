import math

import pytest
import torch
from torch import nn
from torch.func import jacfwd, jacrev, jvp, vmap

import chronograd as cg
from chronograd.cells import (
    ALIF,
    GRU,
    LIF,
    FastSigmoid,
    LeakyReadout,
    LeakyRNN,
    Map,
    Sigmoid,
    Stack,
    Triangle,
    lsnn_beta,
)
from chronograd.testing import assert_pure_step, gradcheck_cell

D = torch.float64


def random_state(cell, B):
    s = cell.init_state(B, dtype=D)
    return type(s)(*[torch.randn_like(t) for t in s])


@pytest.mark.parametrize(
    "cell",
    [
        LeakyRNN(3, 5),
        LeakyRNN(3, 5, alpha=0.4, activation="relu", recurrent=False),
        GRU(3, 5),
        LeakyReadout(3, 2, kappa=0.8),
    ],
    ids=["tanh", "leaky-relu", "gru", "readout"],
)
def test_gradcheck_smooth_cells(cell):
    cell = cell.double()
    assert gradcheck_cell(cell, torch.randn(4, 3, dtype=D), random_state(cell, 4))


@pytest.mark.parametrize(
    "cell",
    [LeakyRNN(3, 5), GRU(3, 5), LIF(3, 5), ALIF(3, 5), LeakyReadout(3, 2, kappa=0.5),
     Stack(LIF(3, 5), LeakyReadout(5, 2))],
    ids=["rnn", "gru", "lif", "alif", "readout", "stack"],
)  # fmt: skip
def test_cells_are_pure_and_shaped(cell):
    cell = cell.double()
    x = torch.randn(4, 3, dtype=D) * 3
    state = cell.init_state(4)
    assert_pure_step(cell, x, state)
    y, new = cell(x, state)
    assert y.shape == (4, cell.output_size)
    for a, b in zip(cg._tree.tree_leaves(state), cg._tree.tree_leaves(new)):
        assert a.shape == b.shape


@pytest.mark.parametrize("surrogate", [Triangle(0.3), FastSigmoid(10.0), Sigmoid(5.0)])
def test_surrogate_backward_and_jvp_match_closed_form(surrogate):
    x = torch.linspace(-2, 2, 41, dtype=D)
    if isinstance(surrogate, Triangle):
        closed = 0.3 * torch.clamp(1 - x.abs(), min=0)
    elif isinstance(surrogate, FastSigmoid):
        closed = 1 / (1 + 10 * x.abs()) ** 2
    else:
        s = torch.sigmoid(5 * x)
        closed = 5 * s * (1 - s)
    xr = x.clone().requires_grad_()
    z = surrogate(xr)
    assert torch.equal(z, (x > 0).to(D))
    z.sum().backward()
    torch.testing.assert_close(xr.grad, closed, rtol=0, atol=1e-15)
    _, tangent = jvp(surrogate, (x,), (torch.ones_like(x),))
    torch.testing.assert_close(tangent, closed, rtol=0, atol=1e-15)
    torch.testing.assert_close(jacrev(surrogate)(x).diagonal(), closed, rtol=0, atol=1e-15)
    torch.testing.assert_close(jacfwd(surrogate)(x).diagonal(), closed, rtol=0, atol=1e-15)
    assert torch.equal(vmap(surrogate)(x.view(41, 1)), (x.view(41, 1) > 0).to(D))


def test_lif_step_follows_the_equations():
    cell = LIF(2, 3, tau_mem=10.0, threshold=0.5).double()
    alpha = math.exp(-1 / 10)
    W, R = cell.input.weight, cell.recurrent.weight
    v = torch.tensor([[0.7, 0.1, -0.2]], dtype=D)  # neuron 0 above threshold: spiked last step
    x = torch.tensor([[1.0, -1.0]], dtype=D)
    z_prev = (v > 0.5).to(D)
    expected_v = alpha * v + x @ W.T + z_prev @ R.T - 0.5 * z_prev
    z, new = cell(x, cg.cells.LIFState(v))
    torch.testing.assert_close(new.v, expected_v)
    assert torch.equal(z, (expected_v > 0.5).to(D))


def test_alif_step_follows_the_equations():
    cell = ALIF(2, 3, tau_mem=10.0, tau_adapt=50.0, beta=0.2, threshold=0.5).double()
    alpha, rho = math.exp(-1 / 10), math.exp(-1 / 50)
    v = torch.tensor([[0.7, 0.62, -0.2]], dtype=D)
    a = torch.tensor([[0.0, 2.0, 2.0]], dtype=D)
    x = torch.tensor([[0.3, 0.2]], dtype=D)
    beta = 0.2 * 0.5  # beta is given in units of the threshold
    z_prev = (v - 0.5 - beta * a > 0).to(D)
    assert z_prev.tolist() == [[1.0, 0.0, 0.0]]  # neuron 1 is held back by its adaptation
    v_new = alpha * v + x @ cell.input.weight.T + z_prev @ cell.recurrent.weight.T - 0.5 * z_prev
    a_new = rho * a + z_prev
    z, new = cell(x, cg.cells.ALIFState(v, a))
    torch.testing.assert_close(new.v, v_new)
    torch.testing.assert_close(new.a, a_new)
    assert torch.equal(z, (v_new - 0.5 - beta * a_new > 0).to(D))


def test_reset_gradient_is_detached_by_default_and_configurable():
    for detach, expected in ((True, 0.0), (False, None)):
        cell = LIF(1, 1, recurrent=False, tau_mem=10.0, detach_reset=detach).double()
        v = torch.tensor([[1.05]], dtype=D, requires_grad=True)  # near threshold: ψ > 0
        _, new = cell(torch.zeros(1, 1, dtype=D), cg.cells.LIFState(v))
        (g,) = torch.autograd.grad(new.v.sum(), v)
        alpha = math.exp(-1 / 10)
        psi = 0.3 * (1 - 0.05)  # triangle at x = 0.05, threshold 1
        want = alpha if detach else alpha - psi
        torch.testing.assert_close(g, torch.tensor([[want]], dtype=D))
        assert expected is None or expected == 0.0


def test_lsnn_beta_mixes_lif_and_alif():
    b = lsnn_beta(3, 2, 0.5)
    assert b.tolist() == [0, 0, 0, 0.5, 0.5]
    cell = ALIF(2, 5, beta=b)
    assert cell.beta.shape == (5,)
    with pytest.raises(ValueError, match="beta must be a float or a"):
        ALIF(2, 5, beta=torch.zeros(4))


def test_nn_linear_is_not_a_cell():
    with pytest.raises(TypeError, match=r"init_state\(batch_size.*Map"):
        cg.unroll(nn.Linear(3, 4), torch.zeros(5, 2, 3))
    with pytest.raises(TypeError, match="must be a chronograd cell"):
        Stack(nn.Linear(3, 4))


def test_map_and_stack_compose():
    model = Stack(Map(nn.Linear(3, 4)), LIF(4, 6), LeakyReadout(6, 2)).double()
    ys, state = cg.unroll(model, torch.randn(7, 5, 3, dtype=D))
    assert ys.shape == (7, 5, 2)
    assert len(state) == 3 and state[0] == ()
    with pytest.raises(ValueError, match="layer 0 outputs 4 features but layer 1 expects 5"):
        Stack(Map(nn.Linear(3, 4)), LIF(5, 6))


@pytest.mark.parametrize(
    "xs, match",
    [
        (torch.zeros(5, 3), r"shape \(T, B, features\)"),
        (torch.zeros(5, 2, 4), r"shape \(T, B, 3\)"),
        (torch.zeros(0, 2, 3), "empty"),
    ],
)
def test_unroll_rejects_wrong_shapes(xs, match):
    with pytest.raises(ValueError, match=match):
        cg.unroll(LeakyRNN(3, 4), xs)


def test_hoisted_unroll_equals_step_by_step():
    model = Stack(GRU(3, 8), LeakyReadout(8, 2, kappa=0.3)).double()
    xs = torch.randn(9, 4, 3, dtype=D)
    ys, _ = cg.unroll(model, xs)
    state = model.init_state(4, dtype=D)
    outs = []
    for t in range(9):
        y, state = model(xs[t], state)
        outs.append(y)
    torch.testing.assert_close(ys, torch.stack(outs), rtol=1e-14, atol=1e-14)


def test_invalid_hyperparameters_raise():
    with pytest.raises(ValueError, match="alpha must lie in"):
        LeakyRNN(3, 4, alpha=1.0)
    with pytest.raises(ValueError, match="kappa must lie in"):
        LeakyReadout(3, 4, kappa=-0.1)
    with pytest.raises(ValueError, match="time constants must be > 0"):
        LIF(3, 4, tau_mem=0.0)
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        GRU(3, 0)
    with pytest.raises(ValueError, match="unknown surrogate"):
        LIF(3, 4, surrogate="step")
