"""OSTL (rules/ostl.py): exact on one LIF layer (BPTT / RTRL), the stated approximation on two
layers checked against a hand computation, the recurrent-coupled variant, and its errors."""

import pytest
import torch

import chronograd as cg
from chronograd.cells import LIF, LeakyReadout, LeakyRNN, Stack
from tests.spiking_hand import D, forward, readout_grads, two_layer

SUM = cg.Objective("mse", reduction="sum")


def close(got, want, tol=1e-12):
    assert set(got) == set(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=tol, msg=n)


@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("recurrent", [False, True])
def test_one_lif_layer_is_bptt_and_rtrl(detach_reset, recurrent):
    torch.manual_seed(1)
    model = Stack(
        LIF(3, 4, recurrent=recurrent, tau_mem=4.0, threshold=0.5, bias=True,
            detach_reset=detach_reset),
        LeakyReadout(4, 2, kappa=0.0),
    ).double()  # fmt: skip
    xs, ys = torch.rand(7, 2, 3, dtype=D) * 2, torch.randn(7, 2, 2, dtype=D)
    objective = cg.Objective("mse")
    # recurrent=True keeps the recurrent mixing: exact RTRL within the layer
    got = cg.gradient(cg.rules.OSTL(recurrent=True), model, xs, ys, objective)
    want = cg.gradient(cg.BPTT(), model, xs, ys, objective)
    assert sum(float(v.abs().sum()) for v in want.values()) > 0.1
    close(got, want)
    chunked = cg.gradient(cg.rules.OSTL(recurrent=True, chunk_size=3), model, xs, ys, objective)
    close(chunked, cg.gradient(cg.rules.RTRL(chunk_size=3), model, xs, ys, objective))
    if not recurrent:  # nothing to mix: both variants are the same exact rule
        close(cg.gradient(cg.rules.OSTL(), model, xs, ys, objective), want)


@pytest.mark.parametrize("detach_reset", [True, False])
def test_two_layers_over_four_steps_match_the_hand_computation(detach_reset):
    model, xs, ys = two_layer(detach_reset=detach_reset, kappa=0.5)
    l1, l2, ro = model.layers
    W2, Wo = l2.input.weight.detach(), ro.input.weight.detach()
    r = 0.0 if detach_reset else 1.0
    steps = forward(model, xs, ys)
    B = xs.shape[1]
    e1 = torch.zeros(B, 3, 2, dtype=D)  # ∂v1_j/∂W1_ji within layer 1
    e1b = torch.zeros(B, 3, dtype=D)
    e2 = torch.zeros(B, 2, 3, dtype=D)
    g1, g1b, g2 = torch.zeros(3, 2, dtype=D), torch.zeros(3, dtype=D), torch.zeros(2, 3, dtype=D)
    for s in steps:
        d1 = float(l1.alpha) - r * l1.threshold * s["psi1p"]  # (B, 3)
        d2 = float(l2.alpha) - r * l2.threshold * s["psi2p"]
        for b in range(B):
            for j in range(3):
                e1b[b, j] = d1[b, j] * e1b[b, j] + 1.0
                for i in range(2):
                    e1[b, j, i] = d1[b, j] * e1[b, j, i] + s["x"][b, i]
            for k in range(2):
                for j in range(3):
                    e2[b, k, j] = d2[b, k] * e2[b, k, j] + s["z1"][b, j]
        gv2 = (s["gy"] @ Wo) * s["psi2"]  # spatial signal of this step only
        gv1 = (gv2 @ W2) * s["psi1"]
        g2 += torch.einsum("bk,bkj->kj", gv2, e2)
        g1 += torch.einsum("bj,bji->ji", gv1, e1)
        g1b += (gv1 * e1b).sum(0)
    gWo, gbo = readout_grads(model, steps)
    want = {
        "layers.0.input.weight": g1, "layers.0.input.bias": g1b, "layers.1.input.weight": g2,
        "layers.2.input.weight": gWo, "layers.2.input.bias": gbo,
    }  # fmt: skip
    assert float(g1.abs().sum()) > 1e-3 and float(g2.abs().sum()) > 1e-3
    close(cg.gradient(cg.rules.OSTL(), model, xs, ys, SUM), want)
    # the same approximation as the trace engine's per-neuron D-RTRL, and not BPTT (κ > 0)
    close(cg.gradient(cg.rules.DRTRL(), model, xs, ys, SUM), want)
    bptt = cg.gradient(cg.BPTT(), model, xs, ys, SUM)
    assert not torch.allclose(bptt["layers.0.input.weight"], g1)


def test_recurrent_variant_keeps_the_mixing_the_feedforward_one_drops():
    model, _, _ = two_layer(recurrent=True, kappa=0.0, seed=1)
    xs, ys = torch.rand(8, 3, 2, dtype=D) * 4, torch.randn(8, 3, 2, dtype=D)
    full = cg.gradient(cg.rules.OSTL(recurrent=True), model, xs, ys, SUM)
    diag = cg.gradient(cg.rules.OSTL(), model, xs, ys, SUM)
    close(diag, cg.gradient(cg.rules.DRTRL(), model, xs, ys, SUM))
    name = "layers.0.recurrent.weight"
    assert float(diag[name].abs().sum()) > 1e-3
    assert not torch.allclose(full[name], diag[name])
    # the readout and the top layer (no recurrence) are the same in both
    for n in ("layers.1.input.weight", "layers.2.input.weight"):
        torch.testing.assert_close(full[n], diag[n], rtol=1e-12, atol=1e-14)


def test_trains_through_the_trainer_and_refuses_other_models():
    model, xs, ys = two_layer()
    trainer = cg.training.Trainer(model, cg.rules.get("ostl", chunk_size=2), SUM, lr=1e-2)
    assert len(trainer.fit([(xs, ys)], epochs=2)["loss"]) == 2
    with pytest.raises(TypeError, match="Stack\\(LIF"):
        cg.gradient(
            cg.rules.OSTL(), Stack(LeakyRNN(2, 3), LeakyReadout(3, 2)).double(), xs, ys, SUM
        )
    with pytest.raises(TypeError, match="recurrent must be a bool"):
        cg.rules.OSTL(recurrent=1)
    with pytest.raises(ValueError, match="chunk_size"):
        cg.rules.OSTL(chunk_size=0)
