"""RLS / FORCE oracles (float64): ridge closed form, linear regressions, Woodbury == rank-1,
forgetting, batches not collapsed, hidden layers and other criteria (checks: test_rls_checks)."""

import math

import pytest
import torch
from torch import nn

from chronograd.cells import LeakyReadout, LeakyRNN, Map, Stack, WilsonCowan
from chronograd.cells.base import Cell
from chronograd.objectives import Objective
from chronograd.rules import RLS
from chronograd.sequence import unroll
from chronograd.training import Trainer, apply_to_model, run_sequence

D = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    """Small sequential tensor work: one thread avoids contention on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


LINEAR_GAUSSIAN = ("inputs", "grad", "jacobian", "scaled_jacobian")
STRATEGIES = ("inputs", "outputs", "grad", "jacobian", "scaled_jacobian")


def train(rule, model, xs, ys, objective=None, carry=None, state=None):
    """One sequence with the updates applied (the driver adds RuleStep.updates)."""
    objective = objective or Objective("mse")
    return run_sequence(
        rule, model, xs, ys, objective, state=state, carry=carry, apply=apply_to_model(model, None)
    )


def linear_data(T=12, B=3, I=4, O=2, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, I, generator=g, dtype=D)
    A = torch.randn(O, I, generator=g, dtype=D)
    c = torch.randn(O, generator=g, dtype=D)
    y = x @ A.T + c + noise * torch.randn(T, B, O, generator=g, dtype=D)
    return x, y


def ridge(x, y, delta, W0, b0, weights=None):
    """argmin_{W,b} Σ m ‖W x + b − y‖² + δ ‖[W b] − [W0 b0]‖² (the bias is an input fixed at 1)."""
    X = torch.cat([x.reshape(-1, x.shape[-1]), torch.ones(x.shape[0] * x.shape[1], 1, dtype=D)], 1)
    Y = y.reshape(-1, y.shape[-1])
    m = torch.ones(X.shape[0], dtype=D) if weights is None else weights.reshape(-1)
    Wt0 = torch.cat([W0, b0[:, None]], 1)
    A = delta * torch.eye(X.shape[1], dtype=D) + X.T @ (m[:, None] * X)
    Wt = torch.linalg.solve(A, X.T @ (m[:, None] * Y) + delta * Wt0.T).T
    return Wt[:, :-1], Wt[:, -1], torch.linalg.inv(A)


def linear_model(I=4, O=2, seed=1):
    torch.manual_seed(seed)
    return Map(nn.Linear(I, O)).double()


class LinearRecurrent(Cell):
    """``o_t = o_{t−1} W + x_t`` with ``W[pre, post]`` (O, O): a linear model of its own past."""

    def __init__(self, n, W=None):
        super().__init__()
        self.input_size = self.output_size = n
        self.W = nn.Parameter(torch.zeros(n, n, dtype=D) if W is None else W.clone())

    def init_state(self, batch_size, *, device=None, dtype=None):
        return (torch.zeros(batch_size, self.output_size, dtype=dtype or D, device=device),)

    def forward(self, x, state):
        o = state[0] @ self.W + x
        return o, (o,)


# -- oracles ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 5, None])
@pytest.mark.parametrize("batch_update", ["sequential", "woodbury"])
def test_inputs_with_forgetting_one_is_the_ridge_closed_form(k, batch_update):
    """RLS(λ=1, P_0 = I/δ) from W_0 over a data set = ridge with penalty δ‖[W b] − [W_0 b_0]‖²,
    and P = (δ I + X̃ᵀX̃)⁻¹ (X̃: inputs with a column of ones for the bias)."""
    x, y = linear_data()
    model = linear_model()
    W0, b0 = model.module.weight.detach().clone(), model.module.bias.detach().clone()
    rule = RLS(strategy="inputs", delta=0.7, chunk_size=k, batch_update=batch_update)
    res = train(rule, model, x, y)
    W, b, P = ridge(x, y, 0.7, W0, b0)
    torch.testing.assert_close(model.module.weight.detach(), W, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model.module.bias.detach(), b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(res.carry.P["module.weight"], P, rtol=1e-10, atol=1e-12)


def test_the_objective_mask_weights_the_rows():
    x, y = linear_data(T=10)
    mask = torch.tensor([0, 1, 1, 0, 1, 1, 1, 0, 1, 1], dtype=D)
    model = linear_model()
    W0, b0 = model.module.weight.detach().clone(), model.module.bias.detach().clone()
    train(RLS(delta=0.3), model, x, y, Objective("mse", mask=mask))
    W, _, _ = ridge(x, y, 0.3, W0, b0, weights=mask[:, None].expand(10, 3))
    torch.testing.assert_close(model.module.weight.detach(), W, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("strategy", LINEAR_GAUSSIAN)
def test_linear_gaussian_strategies_solve_a_linear_regression(strategy):
    """inputs, grad (on a readout), jacobian and scaled_jacobian are exact RLS on a model linear
    in its parameters: after the data (three sequences, P persisting between them) the weights
    are the least-squares solution up to the ridge δ = 1e-9 (error < 1e-6)."""
    batches = [linear_data(seed=s) for s in range(3)]
    model = linear_model()
    trainer = Trainer(model, RLS(strategy=strategy, delta=1e-9), Objective("mse"), optimizer=False)
    trainer.fit(batches, epochs=1)
    x = torch.cat([b[0] for b in batches], 1)
    y = torch.cat([b[1] for b in batches], 1)
    W, b, _ = ridge(x, y, 0.0, torch.zeros(2, 4, dtype=D), torch.zeros(2, dtype=D))
    assert (model.module.weight.detach() - W).abs().max() < 1e-6
    assert (model.module.bias.detach() - b).abs().max() < 1e-6


def test_outputs_strategy_recovers_a_recurrent_weight():
    """CURBD's regression of the output on the previous output: a linear recurrent model
    o_t = o_{t−1} W + x_t learns the teacher's W* (noise-free data) to < 1e-6. Its regressors
    are its own past outputs (output-error identification), so it needs several passes; with
    forgetting the gain does not decay and convergence is geometric."""
    g = torch.Generator().manual_seed(3)
    n = 3
    W_star = torch.randn(n, n, generator=g, dtype=D)
    W_star *= 0.6 / torch.linalg.eigvals(W_star).abs().max()
    teacher, student = LinearRecurrent(n, W_star), LinearRecurrent(n)
    rule = RLS(strategy="outputs", delta=1e-3, forgetting=0.9)
    carry = None
    for _ in range(8):
        x = torch.randn(20, 2, n, generator=g, dtype=D)
        with torch.no_grad():
            y, _ = unroll(teacher, x)
        carry = train(rule, student, x, y, carry=carry).carry
    assert (student.W.detach() - W_star).abs().max() < 1e-6


def test_outputs_strategy_fits_a_wilson_cowan_network_curbd_style():
    """CURBD on a Wilson–Cowan cell: the recurrent weight regressed on last step's rates drives
    the rate error down by a large factor (the cell is nonlinear: no closed form; the rate
    error stands in for the error of r W, as in CURBD, so it takes a few passes)."""
    torch.manual_seed(0)
    teacher = WilsonCowan(2, 6, tau=3.0, learn_tau=False, weight_scale=3.0).double()
    student = WilsonCowan(2, 6, tau=3.0, learn_tau=False, weight_scale=3.0).double()
    student.input_weight.data.copy_(teacher.input_weight.data)
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(40, 4, 2, generator=g, dtype=D) for _ in range(6)]
    with torch.no_grad():
        ys = [unroll(teacher, x)[0] for x in xs]
        before = sum(float(((unroll(student, x)[0] - y) ** 2).mean()) for x, y in zip(xs, ys))
    rule = RLS(strategy="outputs", delta=0.01, forgetting=0.95, params=("recurrent_weight",))
    carry = None
    for _ in range(3):
        for x, y in zip(xs, ys):
            carry = train(rule, student, x, y, carry=carry).carry
    with torch.no_grad():
        after = sum(float(((unroll(student, x)[0] - y) ** 2).mean()) for x, y in zip(xs, ys))
    assert after < 0.02 * before


def hidden_model():
    torch.manual_seed(2)
    return Stack(Map(nn.Linear(3, 8)), Map(nn.Tanh()), Map(nn.Linear(8, 2))).double()


def recurrent_model():
    torch.manual_seed(2)
    return Stack(LeakyRNN(3, 6), LeakyReadout(6, 2)).double()


@pytest.mark.parametrize(
    ("strategy", "make", "objective", "k"),
    [
        ("inputs", linear_model, "mse", 1),
        ("grad", hidden_model, "mse", 1),
        ("grad", recurrent_model, "mse", 4),
        ("grad", hidden_model, "cross_entropy", 2),
        ("jacobian", hidden_model, "mse", 3),
        ("scaled_jacobian", hidden_model, "cross_entropy", 1),
    ],
)
def test_sequential_rank_one_equals_woodbury(strategy, make, objective, k):
    """B sequential rank-1 updates per step == one Woodbury rank-B update (weights and P)."""
    g = torch.Generator().manual_seed(5)
    m0 = make()
    x = torch.randn(8, 5, m0.input_size, generator=g, dtype=D)
    if objective == "mse":
        y = torch.randn(8, 5, 2, generator=g, dtype=D)
    else:
        y = torch.randint(0, 2, (8, 5), generator=g)
    results = []
    for mode in ("sequential", "woodbury"):
        model = make()
        rule = RLS(strategy=strategy, delta=0.5, forgetting=0.97, chunk_size=k,
                   batch_update=mode)  # fmt: skip
        res = train(rule, model, x, y, Objective(objective))
        results.append((dict(model.named_parameters()), res.carry.P))
    (p1, P1), (p2, P2) = results
    for n in p1:
        torch.testing.assert_close(p1[n], p2[n], rtol=1e-9, atol=1e-11)
    assert P1.keys() == P2.keys() and P1
    for key in P1:
        torch.testing.assert_close(P1[key], P2[key], rtol=1e-9, atol=1e-11)


def test_outputs_sequential_equals_woodbury():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(10, 4, 3, generator=g, dtype=D)
    y = torch.randn(10, 4, 3, generator=g, dtype=D)
    Ws = []
    for mode in ("sequential", "woodbury"):
        model = LinearRecurrent(3, 0.1 * torch.ones(3, 3, dtype=D))
        train(RLS(strategy="outputs", forgetting=0.9, batch_update=mode), model, x, y)
        Ws.append(model.W.detach())
    torch.testing.assert_close(Ws[0], Ws[1], rtol=1e-9, atol=1e-11)


def test_a_batch_is_not_collapsed_to_its_mean():
    """B samples are B regressors: with B = I samples in one step the fit is exact, which the
    batch mean (one regressor) could not achieve."""
    g = torch.Generator().manual_seed(7)
    model = Map(nn.Linear(4, 1, bias=False)).double()
    x = torch.randn(1, 4, 4, generator=g, dtype=D)
    y = torch.randn(1, 4, 1, generator=g, dtype=D)
    train(RLS(delta=1e-10), model, x, y)
    torch.testing.assert_close(model(x[0], ())[0], y[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("strategy", ["inputs", "jacobian"])
def test_forgetting_tracks_a_drifting_target_better(strategy):
    g = torch.Generator().manual_seed(8)
    T, I = 300, 3
    x = torch.randn(T, 2, I, generator=g, dtype=D)
    A0, A1 = torch.randn(1, I, generator=g, dtype=D), torch.randn(1, I, generator=g, dtype=D)
    s = torch.linspace(0, 1, T, dtype=D)[:, None, None, None]
    A = (1 - s) * A0 + s * A1  # (T, 1, 1, I): a slowly rotating regression
    y = (A @ x[..., None]).squeeze(-1) + 0.01 * torch.randn(T, 2, 1, generator=g, dtype=D)
    errors = {}
    for lam in (1.0, 0.9):
        model = Map(nn.Linear(I, 1, bias=False)).double()
        res = train(RLS(strategy=strategy, forgetting=lam), model, x, y)
        errors[lam] = float(((res.outputs[100:] - y[100:]) ** 2).mean())
    assert errors[0.9] < 0.2 * errors[1.0]


# -- learning beyond linear regression ---------------------------------------------------------
@pytest.mark.parametrize("strategy", ["grad", "jacobian"])
def test_hidden_layers_learn(strategy):
    """grad (P-preconditioned back-propagated error) and jacobian (EKF) train a tanh MLP."""
    g = torch.Generator().manual_seed(11)
    teacher = hidden_model()
    for p in teacher.parameters():
        p.data = torch.randn(p.shape, generator=g, dtype=D)
    xs = [torch.randn(10, 8, 3, generator=g, dtype=D) for _ in range(5)]
    with torch.no_grad():
        ys = [unroll(teacher, x)[0] for x in xs]
    model = hidden_model()
    obj = Objective("mse")

    def loss():
        with torch.no_grad():
            return sum(float(obj.loss(unroll(model, x)[0], y))
                       for x, y in zip(xs, ys))  # fmt: skip

    before = loss()
    trainer = Trainer(model, RLS(strategy=strategy, delta=1.0), obj, optimizer=False)
    trainer.fit(list(zip(xs, ys)), epochs=4)
    assert loss() < 0.05 * before


def test_scaled_jacobian_trains_a_classifier_with_cross_entropy():
    g = torch.Generator().manual_seed(12)
    W = torch.randn(3, 4, generator=g, dtype=D)
    x = torch.randn(20, 8, 4, generator=g, dtype=D)
    y = (x @ W.T).argmax(-1)
    model = linear_model(4, 3)
    obj = Objective("cross_entropy")
    with torch.no_grad():
        before = float(obj.loss(model(x, ())[0], y))
    res = train(RLS(strategy="scaled_jacobian", delta=1.0), model, x, y, obj)
    with torch.no_grad():
        after = float(obj.loss(model(x, ())[0], y))
    assert after < 0.3 * before and math.isfinite(res.loss)
