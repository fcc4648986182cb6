"""OTPE (rules/otpe.py): hand computation on two layers, the reduction to OTTT where the next
layer has no memory, exactness on one layer, and its errors."""

import pytest
import torch

import chronograd as cg
from chronograd.cells import LIF, LeakyReadout, Stack
from tests.spiking_hand import D, forward, readout_grads, two_layer

SUM = cg.Objective("mse", reduction="sum")


def close(got, want):
    assert set(got) == set(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12, msg=n)


def test_two_layers_over_four_steps_match_the_hand_computation():
    model, xs, ys = two_layer(kappa=0.6)
    l1, l2, ro = model.layers
    a1_, a2_, kappa = float(l1.alpha), float(l2.alpha), ro.kappa
    W2, Wo = l2.input.weight.detach(), ro.input.weight.detach()
    steps = forward(model, xs, ys)
    B = xs.shape[1]
    a1, a1b, a2 = torch.zeros(B, 2, dtype=D), torch.zeros(B, dtype=D), torch.zeros(B, 3, dtype=D)
    R1, R1b = torch.zeros(B, 3, 2, dtype=D), torch.zeros(B, 3, dtype=D)
    R2 = torch.zeros(B, 2, 3, dtype=D)
    g1, g1b, g2 = torch.zeros(3, 2, dtype=D), torch.zeros(3, dtype=D), torch.zeros(2, 3, dtype=D)
    for s in steps:
        a1, a1b, a2 = a1_ * a1 + s["x"], a1_ * a1b + 1.0, a2_ * a2 + s["z1"]  # OTTT's traces
        for b in range(B):
            for j in range(3):  # layer 1's spikes, integrated by layer 2 (decay α2)
                R1b[b, j] = a2_ * R1b[b, j] + s["psi1"][b, j] * a1b[b]
                for i in range(2):
                    R1[b, j, i] = a2_ * R1[b, j, i] + s["psi1"][b, j] * a1[b, i]
            for k in range(2):  # layer 2's spikes, integrated by the readout (decay κ)
                for j in range(3):
                    R2[b, k, j] = kappa * R2[b, k, j] + s["psi2"][b, k] * a2[b, j]
        gz2 = s["gy"] @ Wo
        gz1 = (gz2 * s["psi2"]) @ W2
        g1 += torch.einsum("bj,bji->ji", gz1, R1)
        g1b += (gz1 * R1b).sum(0)
        g2 += torch.einsum("bk,bkj->kj", gz2, R2)
    gWo, gbo = readout_grads(model, steps)
    want = {
        "layers.0.input.weight": g1, "layers.0.input.bias": g1b, "layers.1.input.weight": g2,
        "layers.2.input.weight": gWo, "layers.2.input.bias": gbo,
    }  # fmt: skip
    assert float(g1.abs().sum()) > 1e-3 and float(g2.abs().sum()) > 1e-3
    close(cg.gradient(cg.rules.OTPE(), model, xs, ys, SUM), want)
    close(cg.gradient(cg.rules.OTPE(chunk_size=1), model, xs, ys, SUM), want)
    ottt = cg.gradient(cg.rules.OTTT(trace_input=True), model, xs, ys, SUM)
    assert not torch.allclose(ottt["layers.1.input.weight"], g2)  # κ > 0: more than OTTT


def test_reduces_to_ottt_when_the_next_layer_has_no_memory():
    torch.manual_seed(2)
    model = Stack(LIF(3, 4, recurrent=False, tau_mem=4.0, threshold=0.5, bias=True),
                  LeakyReadout(4, 2, kappa=0.0)).double()  # fmt: skip
    xs, ys = torch.rand(6, 2, 3, dtype=D) * 2, torch.randn(6, 2, 2, dtype=D)
    objective = cg.Objective("mse")
    got = cg.gradient(cg.rules.OTPE(), model, xs, ys, objective)
    close(got, cg.gradient(cg.rules.OTTT(trace_input=True), model, xs, ys, objective))
    # two layers, readout without memory: the top layer's gradient is OTTT's
    model, xs, ys = two_layer(kappa=0.0)
    got = cg.gradient(cg.rules.OTPE(), model, xs, ys, SUM)
    ottt = cg.gradient(cg.rules.OTTT(trace_input=True), model, xs, ys, SUM)
    torch.testing.assert_close(got["layers.1.input.weight"], ottt["layers.1.input.weight"])


@pytest.mark.parametrize("kappa", [0.0, 0.7])
def test_one_layer_with_the_reset_gradient_stopped_is_bptt(kappa):
    torch.manual_seed(3)
    model = Stack(LIF(3, 4, recurrent=False, tau_mem=4.0, threshold=0.5, bias=True),
                  LeakyReadout(4, 2, kappa=kappa)).double()  # fmt: skip
    xs, ys = torch.rand(6, 2, 3, dtype=D) * 2, torch.randn(6, 2, 2, dtype=D)
    objective = cg.Objective("mse")
    want = cg.gradient(cg.BPTT(), model, xs, ys, objective)
    assert float(want["layers.0.input.weight"].abs().sum()) > 1e-3
    close(cg.gradient(cg.rules.OTPE(), model, xs, ys, objective), want)


def test_trains_and_refuses_recurrent_layers():
    model, xs, ys = two_layer()
    trainer = cg.training.Trainer(model, cg.rules.get("otpe"), SUM, lr=1e-2)
    assert len(trainer.fit([(xs, ys)], epochs=2)["loss"]) == 2
    recurrent, _, _ = two_layer(recurrent=True)
    with pytest.raises(TypeError, match="recurrent=False"):
        cg.gradient(cg.rules.OTPE(), recurrent, xs, ys, SUM)
    with pytest.raises(ValueError, match="chunk_size"):
        cg.rules.OTPE(chunk_size=-2)
