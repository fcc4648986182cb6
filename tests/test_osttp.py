"""OSTTP (rules/osttp.py): hand computation with the fixed target projections, memory flat in
``T`` (no tensor kept for a backward pass grows with the sequence), and its errors."""

import weakref

import pytest
import torch

import chronograd as cg
from chronograd.cells import LIF, LeakyReadout, Stack
from chronograd.traces.feedback import random_feedback
from tests.spiking_hand import D, forward, two_layer

SUM = cg.Objective("mse", reduction="sum")


@pytest.mark.parametrize("criterion", ["mse", "cross_entropy"])
@pytest.mark.parametrize("detach_reset", [True, False])
def test_two_layers_over_four_steps_match_the_hand_computation(criterion, detach_reset):
    model, xs, ys = two_layer(detach_reset=detach_reset, kappa=0.5)
    if criterion == "cross_entropy":
        ys = torch.tensor([[0, 1], [1, 1], [0, 0], [1, 0]])
        target = torch.nn.functional.one_hot(ys, 2).to(D)
    else:
        target = ys
    l1, l2, ro = model.layers
    r = 0.0 if detach_reset else 1.0
    steps = forward(model, xs, target)
    B1 = random_feedback(3, 2, "xavier_normal", seed=7, dtype=D)  # layer l draws seed + l
    B2 = random_feedback(2, 2, "xavier_normal", seed=8, dtype=D)
    B = xs.shape[1]
    e1, e1b = torch.zeros(B, 3, 2, dtype=D), torch.zeros(B, 3, dtype=D)
    e2 = torch.zeros(B, 2, 3, dtype=D)
    g1, g1b, g2 = torch.zeros(3, 2, dtype=D), torch.zeros(3, dtype=D), torch.zeros(2, 3, dtype=D)
    gWo, gbo = torch.zeros(2, 2, dtype=D), torch.zeros(2, dtype=D)
    zh = c = 0.0
    for t, s in enumerate(steps):
        d1 = float(l1.alpha) - r * l1.threshold * s["psi1p"]
        d2 = float(l2.alpha) - r * l2.threshold * s["psi2p"]
        for b in range(B):
            for j in range(3):
                e1b[b, j] = d1[b, j] * e1b[b, j] + 1.0
                for i in range(2):
                    e1[b, j, i] = d1[b, j] * e1[b, j, i] + s["x"][b, i]
            for k in range(2):
                for j in range(3):
                    e2[b, k, j] = d2[b, k] * e2[b, k, j] + s["z1"][b, j]
        e = -target[t]  # the projected target, no signal from the layers above
        L1, L2 = s["psi1"] * (e @ B1.T), s["psi2"] * (e @ B2.T)
        g1 += torch.einsum("bj,bji->ji", L1, e1)
        g1b += (L1 * e1b).sum(0)
        g2 += torch.einsum("bk,bkj->kj", L2, e2)
        gy = s["gy"] if criterion == "mse" else torch.softmax(s["y"], -1) - target[t]
        zh, c = ro.kappa * zh + s["z2"], ro.kappa * c + 1.0
        gWo += gy.T @ zh
        gbo += gy.sum(0) * c
    want = {
        "layers.0.input.weight": g1, "layers.0.input.bias": g1b, "layers.1.input.weight": g2,
        "layers.2.input.weight": gWo, "layers.2.input.bias": gbo,
    }  # fmt: skip
    assert float(g1.abs().sum()) > 1e-3 and float(g2.abs().sum()) > 1e-3
    objective = cg.Objective(criterion, reduction="sum")
    for rule in (cg.rules.OSTTP(feedback_seed=7), cg.rules.OSTTP(feedback_seed=7, chunk_size=1)):
        got = cg.gradient(rule, model, xs, ys, objective)
        for n in want:
            torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12, msg=n)
    assert [tuple(b.shape) for b in rule.feedback_matrices(model)] == [(3, 2), (2, 2)]


def peak_saved(rule, model, T):
    """The most tensors saved for a backward pass alive at once during ``cg.gradient``."""
    live = peak = 0

    def gone():
        nonlocal live
        live -= 1

    def pack(x):
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        weakref.finalize(x, gone)
        return x

    torch.manual_seed(0)
    xs, ys = torch.rand(T, 2, 3, dtype=D) * 2, torch.randn(T, 2, 2, dtype=D)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        cg.gradient(rule, model, xs, ys, cg.Objective("mse"))
    return peak


def test_memory_is_flat_in_the_sequence_length():
    torch.manual_seed(0)
    model = Stack(LIF(3, 5, recurrent=False, tau_mem=4.0, threshold=0.5, detach_reset=False),
                  LIF(5, 4, tau_mem=4.0, threshold=0.5), LeakyReadout(4, 2, kappa=0.5)).double()  # fmt: skip
    short, long = peak_saved(cg.rules.OSTTP(), model, 5), peak_saved(cg.rules.OSTTP(), model, 60)
    assert short == long
    assert peak_saved(cg.BPTT(), model, 60) > 4 * peak_saved(cg.BPTT(), model, 5)  # it can fail
    # the traces carried forward have the same size whatever T
    rule = cg.rules.OSTTP()
    sizes = []
    for T in (5, 60):
        xs, ys = torch.rand(T, 2, 3, dtype=D), torch.randn(T, 2, 2, dtype=D)
        state = model.init_state(2, dtype=D)
        span = cg.sequence.Span(0, T, T)
        step = rule.update(model, cg.rules.Chunk(xs, ys, span), state, rule.init(model, state),
                           cg.Objective("mse"))  # fmt: skip
        leaves = [v for v in cg._tree.tree_leaves(step.carry) if isinstance(v, torch.Tensor)]
        sizes.append(sum(v.numel() for v in leaves))
    assert sizes[0] == sizes[1] > 0


def test_bad_options_and_targets():
    with pytest.raises(ValueError, match="feedback generator"):
        cg.rules.OSTTP(feedback_init="uniform")
    with pytest.raises(ValueError, match="feedback_norm_clip"):
        cg.rules.OSTTP(feedback_norm_clip=0.0)
    with pytest.raises(TypeError, match="feedback_seed"):
        cg.rules.OSTTP(feedback_seed=1.5)
    model, xs, _ = two_layer()
    with pytest.raises(ValueError, match="mse"):  # the objective refuses first: wrong shape
        cg.gradient(cg.rules.OSTTP(), model, xs, torch.randn(4, 2, 3, dtype=D), SUM)
    trainer = cg.training.Trainer(model, cg.rules.get("osttp"), SUM, lr=1e-2)
    assert len(trainer.fit([(xs, torch.randn(4, 2, 2, dtype=D))], epochs=2)["loss"]) == 2
