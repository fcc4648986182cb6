"""The learning-signal plug-in of e-prop (traces/learning_signal.py): a neuromodulator
``M_t = W_outᵀ ∂ℓ_t/∂y_t`` reproduces symmetric e-prop; a global ``M`` (B,) is broadcast; the
errors name the fix."""

import pytest
import torch

import chronograd as cg
from chronograd.cells import ALIF, LeakyReadout, Stack
from chronograd.traces.learning_signal import actor_critic_modulator, error_modulator

D = torch.float64


def problem():
    torch.manual_seed(0)
    model = Stack(
        ALIF(3, 6, tau_mem=5.0, tau_adapt=20.0, beta=0.3, threshold=0.4),
        LeakyReadout(6, 2, kappa=0.6),
    ).double()
    xs, ys = torch.rand(9, 4, 3, dtype=D) * 2, torch.randn(9, 4, 2, dtype=D)
    return model, xs, ys


def output_error(model, xs, ys, objective):
    """``∂ℓ_t/∂y_t`` (T, B, O) of the objective, by autograd on the outputs."""
    with torch.no_grad():
        outputs, _ = cg.unroll(model, xs)
    outputs.requires_grad_(True)
    (gy,) = torch.autograd.grad(objective.loss(outputs, ys), [outputs])
    return gy


@pytest.mark.parametrize(
    "options", [{}, {"method": "traces"}, {"chunk_size": None, "method": "traces"}]
)
def test_gradient_modulator_through_symmetric_feedback_is_eprop(options):
    model, xs, ys = problem()
    objective = cg.Objective("mse")
    w_out = model.layers[1].input.weight.detach()
    m = error_modulator(output_error(model, xs, ys, objective), w_out.t())  # (T, B, H)
    want = cg.gradient(cg.rules.EProp(**options), model, xs, ys, objective)
    rule = cg.rules.EProp(learning_signal="neuromodulator", **options)
    got = cg.gradient(rule, model, xs, {"target": ys, "modulator": m}, objective)
    assert float(want["layers.0.input.weight"].abs().sum()) > 1e-3
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12, msg=n)


def test_per_step_updates_use_the_modulator_of_their_window():
    model, xs, ys = problem()
    objective = cg.Objective("mse")
    m = torch.randn(9, 4, 6, dtype=D)
    rule = cg.rules.EProp(learning_signal="neuromodulator")
    whole = cg.gradient(rule, model, xs, {"target": ys, "modulator": m}, objective)
    online = cg.rules.EProp(learning_signal="neuromodulator", chunk_size=1)
    steps = cg.gradient(online, model, xs, {"target": ys, "modulator": m}, objective)
    name = "layers.0.input.weight"  # the hidden gradient does not depend on the loss windows
    torch.testing.assert_close(steps[name], whole[name], rtol=1e-10, atol=1e-12)


def test_a_global_modulator_is_broadcast_to_every_neuron():
    model, xs, ys = problem()
    objective = cg.Objective("mse")
    m = torch.randn(9, 4, dtype=D)
    rule = cg.rules.EProp(learning_signal="neuromodulator")
    got = cg.gradient(rule, model, xs, {"target": ys, "modulator": m}, objective)
    wide = m[..., None].expand(9, 4, 6)
    want = cg.gradient(rule, model, xs, {"target": ys, "modulator": wide}, objective)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-12, atol=1e-14)
    # ΔW ∝ Σ_t M_t e_t: the hidden gradient is linear in M
    twice = cg.gradient(rule, model, xs, {"target": ys, "modulator": 2 * m}, objective)
    name = "layers.0.recurrent.weight"
    torch.testing.assert_close(twice[name], 2 * got[name])


def test_actor_critic_modulator_is_the_surrogate_loss_error_through_feedback():
    torch.manual_seed(1)
    logits = torch.randn(5, 3, dtype=D, requires_grad=True)
    value = torch.randn(5, dtype=D, requires_grad=True)
    action, reward = torch.randint(0, 3, (5,)), torch.rand(5, dtype=D)
    bp, bv = torch.randn(7, 3, dtype=D), torch.randn(7, dtype=D)
    delta = (reward - value).detach()
    logp = torch.log_softmax(logits, -1).gather(1, action[:, None])[:, 0]
    loss = (-delta * logp + 0.25 * (reward - value) ** 2).sum()
    gl, gv = torch.autograd.grad(loss, [logits, value])
    want = gl @ bp.t() + gv[:, None] * bv[None, :]
    got = actor_critic_modulator(logits, value, action, reward, bp, bv, value_coef=0.5)
    torch.testing.assert_close(got, want)


def test_errors_name_the_fix():
    model, xs, ys = problem()
    rule = cg.rules.EProp(learning_signal="neuromodulator")
    with pytest.raises(TypeError, match="modulator"):
        cg.gradient(rule, model, xs, ys, cg.Objective("mse"))
    with pytest.raises(ValueError, match=r"\(T, B\) or \(T, B, 6\)"):
        bad = {"target": ys, "modulator": torch.randn(9, 4, 5, dtype=D)}
        cg.gradient(rule, model, xs, bad, cg.Objective("mse"))
    with pytest.raises(ValueError, match="learning_signal must be one of"):
        cg.rules.EProp(learning_signal="reward")
