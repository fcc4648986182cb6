import pytest
import torch

import chronograd as cg
from chronograd import TBPTT, Objective
from chronograd.cells import LeakyReadout, Stack
from chronograd.rules import FPTT, fptt_load_average
from chronograd.rules.fptt import FPTTCarry
from chronograd.traces import intercept_linears
from chronograd.training import Event, Trainer, apply_to_model, run_sequence
from chronograd.transforms import clip_by_global_norm

D = torch.float64
I, O, B = 3, 2, 3
KAPPA = 0.5


def integrator():
    """``y_t = κ y_{t-1} + W x_t``: a quadratic per-step loss whose gradient depends on y_{t-1}."""
    return LeakyReadout(I, O, kappa=KAPPA, bias=False).double()


def grad_l(W, h, x, y):
    """``∇_W Σ_b mean_o (κ h + W x - y)²`` by hand: ``(2/O) Rᵀ X``."""
    return (2.0 / O) * (KAPPA * h + x @ W.T - y).T @ x


def run(rule, model, xs, ys, lr, carry=None, transform=None):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return run_sequence(
        rule, model, xs, ys, Objective("mse", reduction="sum"), carry=carry,
        apply=apply_to_model(model, opt), transform=transform,
    )  # fmt: skip


def test_two_pass_form_equals_the_papers_algorithm_by_hand():
    """Algorithm 1: ``W_{t+1} = W_t - η ∇[ℓ_t + (α/2)‖W - W̄_t - ∇ℓ_{t-1}(W_t)/(2α)‖²]`` (one
    SGD step), ``W̄_{t+1} = ½(W̄_t + W_{t+1}) - ∇ℓ_t(W_{t+1})/(2α)`` with ``∇ℓ_t(W_{t+1})`` from
    the pre-step state ``h_{t-1}``. Three steps, so the correction enters twice."""
    torch.manual_seed(0)
    alpha, lr, T = 0.3, 0.2, 3
    model = integrator()
    xs, ys = torch.randn(T, B, I, dtype=D), torch.randn(T, B, O, dtype=D)
    W = model.input.weight.detach().clone()
    W_bar, g_prev, h = W.clone(), torch.zeros_like(W), torch.zeros(B, O, dtype=D)
    post = None  # SpikingJelly's variant: second pass from the post-step state
    for t in range(T):
        reg = alpha * (W - W_bar - g_prev / (2 * alpha))
        W_new = W - lr * (grad_l(W, h, xs[t], ys[t]) + reg)
        h_new = KAPPA * h + xs[t] @ W.T
        g_prev = grad_l(W_new, h, xs[t], ys[t])  # from h_{t-1}
        if t == 0:
            post = 0.5 * (W_bar + W_new) - grad_l(W_new, h_new, xs[t], ys[t]) / (2 * alpha)
        W_bar = 0.5 * (W_bar + W_new) - g_prev / (2 * alpha)
        W, h = W_new, h_new
        if t == 0:
            first_bar = W_bar.clone()
    res = run(FPTT(alpha, form="two_pass"), model, xs, ys, lr)
    torch.testing.assert_close(model.input.weight, W, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(res.carry.w_bar["input.weight"], W_bar, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(res.carry.lam["input.weight"], 0.5 * g_prev)
    torch.testing.assert_close(res.state.y, h)
    assert not torch.allclose(first_bar, post)  # the state of the second pass matters here


def test_dual_form_equals_its_equations_by_hand():
    """Dual form with ``c = 1`` (the authors' code): regulariser ``(α/2)‖W - W̄ - λ/α‖²``,
    ``λ_{t+1} = λ_t - α(W_{t+1} - W̄_t)``, ``W̄_{t+1} = ½(W̄_t + W_{t+1}) - λ_{t+1}/(2α)``; and with
    ``c = ½`` (the paper's correction): ``λ_{t+1} = ½(λ_t - α(W_{t+1} - W̄_t))``,
    ``W̄_{t+1} = ½(W̄_t + W_{t+1}) - λ_{t+1}/α``."""
    torch.manual_seed(1)
    alpha, lr, T = 0.4, 0.15, 3
    xs, ys = torch.randn(T, B, I, dtype=D), torch.randn(T, B, O, dtype=D)
    for c in (1.0, 0.5):
        torch.manual_seed(2)
        model = integrator()
        W = model.input.weight.detach().clone()
        W_bar, lam, h = W.clone(), torch.zeros_like(W), torch.zeros(B, O, dtype=D)
        for t in range(T):
            W_new = W - lr * (grad_l(W, h, xs[t], ys[t]) + alpha * (W - W_bar - lam / alpha))
            h = KAPPA * h + xs[t] @ W.T
            if c == 1.0:
                lam = lam - alpha * (W_new - W_bar)
                W_bar = 0.5 * (W_bar + W_new) - lam / (2 * alpha)
            else:
                lam = 0.5 * (lam - alpha * (W_new - W_bar))
                W_bar = 0.5 * (W_bar + W_new) - lam / alpha
            W = W_new
        res = run(FPTT(alpha, correction=c), model, xs, ys, lr)
        torch.testing.assert_close(model.input.weight, W, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(res.carry.w_bar["input.weight"], W_bar, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(res.carry.lam["input.weight"], lam, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("correction", [0.5, 1.0])
def test_dual_and_two_pass_forms_agree_when_each_step_solves_its_proximal_problem(correction):
    """With ``x_t = s I`` (B = I) the per-step loss has Hessian ``(2 s²/O) I`` in ``W``, so one
    SGD step with ``η = 1/(2 s²/O + α)`` is the exact proximal minimiser; then
    ``λ_t - α(W_{t+1} - W̄_t) = ∇ℓ_t(W_{t+1})`` and both forms give the same trajectory."""
    torch.manual_seed(3)
    alpha, s, T = 0.7, 1.3, 4
    lr = 1.0 / (2 * s * s / O + alpha)
    xs = (s * torch.eye(I, dtype=D)).expand(T, B, I).clone()
    seqs = [torch.randn(T, B, O, dtype=D) for _ in range(2)]
    out = {}
    for form in ("dual", "two_pass"):
        torch.manual_seed(4)
        model = integrator()
        rule, carry = FPTT(alpha, form=form, correction=correction), None
        for ys in seqs:
            carry = run(rule, model, xs, ys, lr, carry=carry).carry
        out[form] = (model.input.weight.detach().clone(), carry)
    (w1, c1), (w2, c2) = out["dual"], out["two_pass"]
    torch.testing.assert_close(w1, w2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        c1.w_bar["input.weight"], c2.w_bar["input.weight"], rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        c1.lam["input.weight"], c2.lam["input.weight"], rtol=1e-10, atol=1e-12
    )
    assert float(c1.lam["input.weight"].abs().max()) > 1e-3  # the correction is not trivial
    # with an inexact step (half the learning rate) the two forms differ
    inexact = {}
    for form in ("dual", "two_pass"):
        torch.manual_seed(4)
        model = integrator()
        run(FPTT(alpha, form=form, correction=correction), model, xs, seqs[0], lr / 2)
        inexact[form] = model.input.weight.detach().clone()
    assert not torch.allclose(inexact["dual"], inexact["two_pass"])


def lif_net():
    return Stack(cg.cells.LIF(4, 6, tau_mem=4.0, threshold=0.5), LeakyReadout(6, 2)).double()


def test_chunks_back_propagate_inside_and_add_the_summed_regulariser_gradient():
    torch.manual_seed(5)
    model = lif_net()
    T, K, alpha = 10, 4, 0.25
    xs, ys = torch.rand(T, B, 4, dtype=D) * 2, torch.randn(T, B, 2, dtype=D)
    obj = Objective("mse")
    rule = FPTT(alpha, chunk_size=K)
    live = dict(model.named_parameters())
    carry = FPTTCarry(
        {n: p.detach() + 0.1 * torch.randn_like(p) for n, p in live.items()},
        {n: 0.05 * torch.randn_like(p) for n, p in live.items()},
    )
    got = run_sequence(rule, model, xs, ys, obj, carry=carry)  # no update applied
    ref = cg.gradient(TBPTT(K), model, xs, ys, obj)
    reg = rule.regularizer(model, carry)
    reg_grads = dict(zip(live, torch.autograd.grad(reg, list(live.values()))))
    n_chunks = 3
    for n in ref:
        torch.testing.assert_close(got.grads[n], ref[n] + n_chunks * reg_grads[n])
    # the regulariser is a sum over elements, not a mean
    total = sum(((p - carry.w_bar[n] - carry.lam[n] / alpha) ** 2).sum() for n, p in live.items())
    torch.testing.assert_close(reg, 0.5 * alpha * total)


def test_one_forward_and_one_backward_per_step_in_the_dual_form(monkeypatch):
    torch.manual_seed(6)
    model = lif_net()
    T = 8
    xs, ys = torch.rand(T, B, 4, dtype=D), torch.randn(T, B, 2, dtype=D)
    real_grad = torch.autograd.grad
    counts = {"backward": 0, "depth": 0}

    def counting_grad(*args, **kwargs):  # outermost calls only (a mode re-dispatches to it)
        counts["backward"] += counts["depth"] == 0
        counts["depth"] += 1
        try:
            return real_grad(*args, **kwargs)
        finally:
            counts["depth"] -= 1

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    first = {"layers.0.input.weight": model.layers[0].input.weight}
    for form, per_step in (("dual", 1), ("two_pass", 2)):
        counts["backward"] = 0
        with intercept_linears(first) as rec:
            run(FPTT(0.2, form=form), model, xs, ys, lr=0.01)
        forward_steps = sum(c.input.shape[:-1].numel() for c in rec.calls) // B
        assert (forward_steps, counts["backward"]) == (per_step * T, per_step * T), form


def test_clipping_limits_each_update():
    torch.manual_seed(7)
    model = integrator()
    xs, ys = 5 * torch.randn(1, B, I, dtype=D), 5 * torch.randn(1, B, O, dtype=D)
    before = model.input.weight.detach().clone()
    run(FPTT(0.1), model, xs, ys, lr=1.0, transform=clip_by_global_norm(0.5))
    step = (model.input.weight.detach() - before).norm()
    torch.testing.assert_close(step, torch.tensor(0.5, dtype=D))


def toy_data(n=3):
    g = torch.Generator().manual_seed(8)
    return [
        (torch.rand(6, B, 4, generator=g, dtype=D) * 2, torch.randn(6, B, 2, generator=g, dtype=D))
        for _ in range(n)
    ]


def test_running_average_persists_across_sequences_and_checkpoints(tmp_path):
    data = toy_data()

    def trainer(rule):
        torch.manual_seed(9)
        model = lif_net()
        return Trainer(
            model, rule, Objective("mse"), optimizer=torch.optim.SGD(model.parameters(), lr=0.05)
        )

    for form in ("dual", "two_pass"):
        rule = FPTT(0.2, form=form)
        full = trainer(rule)
        full.fit(data, epochs=2)
        part = trainer(rule)
        part.fit(data, epochs=1)
        assert part.carry.lam["layers.0.input.weight"].abs().sum() > 0  # kept across sequences
        part.save_checkpoint(tmp_path / f"{form}.pt")
        resumed = trainer(rule)
        resumed.resume(tmp_path / f"{form}.pt")
        for n in part.carry.w_bar:
            torch.testing.assert_close(resumed.carry.w_bar[n], part.carry.w_bar[n])
        resumed.fit(data, epochs=2)
        for (n, p), q in zip(full.model.named_parameters(), resumed.model.parameters()):
            torch.testing.assert_close(q, p, msg=n)


def test_load_average_at_epoch_end():
    torch.manual_seed(10)
    model = lif_net()
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    rule = FPTT(0.2)
    tr = Trainer(
        model, rule, Objective("mse"), optimizer=torch.optim.SGD(model.parameters(), lr=0.05)
    )
    seen = []
    tr.add_handler(Event.EPOCH_COMPLETED, fptt_load_average)
    tr.add_handler(
        Event.EPOCH_COMPLETED,
        lambda t: seen.append({n: p.detach().clone() for n, p in t.model.named_parameters()}),
    )
    tr.fit(toy_data(2), epochs=1)
    for n, w in seen[0].items():
        torch.testing.assert_close(w, tr.carry.w_bar[n])
    assert any(not torch.allclose(seen[0][n], initial[n]) for n in initial)  # it did move
    with pytest.raises(TypeError, match="FPTT"):
        fptt_load_average(Trainer(lif_net(), TBPTT(2), Objective("mse")))


def test_init_from_optimizer_and_errors():
    model = lif_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    carry = FPTT(0.1).init_from(model, opt)
    for n, p in model.named_parameters():
        assert torch.equal(carry.w_bar[n], p) and carry.w_bar[n] is not p
        assert torch.equal(carry.lam[n], torch.zeros_like(p))
    partial = torch.optim.SGD(model.layers[1].parameters(), lr=0.1)
    with pytest.raises(ValueError, match="does not update"):
        FPTT(0.1).init_from(model, partial)
    FPTT(0.1, params=("layers.1.*",)).init_from(model, partial)
    for bad in (
        dict(alpha=0.0),
        dict(alpha=-1.0),
        dict(chunk_size=0),
        dict(form="primal"),
        dict(correction=0.0),
    ):
        with pytest.raises(ValueError):
            FPTT(**bad)
    with pytest.raises(ValueError, match="accumulate"):
        Trainer(model, FPTT(0.1), Objective("mse"), accumulate=True)
    with pytest.raises(TypeError):
        FPTT(0.1, beta=0.5)  # unknown option
    with pytest.raises(ValueError, match="same params"):
        FPTT(0.1).load_carry_state_dict(model, {"w_bar": {}, "lam": {}})
    assert cg.rules.get("fptt", alpha=0.3, chunk_size=2) == FPTT(0.3, chunk_size=2)
