import copy

import pytest
import torch
import torch.nn.functional as F

from chronograd import Objective
from chronograd.cells import spiking_mlp
from chronograd.online import (
    RunningAverages,
    fptt_online_training,
    fptt_online_training_init_w_ra,
    ottt_online_training,
)
from chronograd.rules import FPTT, OTTT, SLTT
from chronograd.training import Trainer, apply_to_model, run_sequence

D = torch.float64
T, N = 6, 4


def net():
    torch.manual_seed(0)
    return spiking_mlp((5, 7, 3), tau_mem=4.0, threshold=0.5).double()


def data(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, N, 5, generator=g, dtype=D) * 1.5, torch.randn(
        T, N, 3, generator=g, dtype=D
    )


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1)


def assert_same_params(a, b):
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14, msg=n)
    fresh = dict(net().named_parameters())
    assert any(not torch.allclose(p, fresh[n]) for n, p in a.named_parameters())  # trained


def test_ottt_helper_equals_the_trainer_online_and_run_sequence_offline():
    xs, ys = data(1)
    # online: each step is its own window, so Objective("mse") per step is F.mse_loss
    a, b = net(), net()
    opt_a = sgd(a)
    loss, out = ottt_online_training(
        a, opt_a, xs.transpose(0, 1), ys.transpose(0, 1), F.mse_loss, True
    )
    trainer = Trainer(b, OTTT(chunk_size=1), Objective("mse"), optimizer=sgd(b), time_dim=1)
    trainer.fit([(xs.transpose(0, 1), ys.transpose(0, 1))], epochs=1)
    assert_same_params(a, b)
    assert out.shape == (N, T, 3) and not out.requires_grad
    # offline: one update with the summed step losses
    a, b = net(), net()
    loss, out = ottt_online_training(
        a, sgd(a), xs.transpose(0, 1), ys.transpose(0, 1), F.mse_loss, False
    )
    per_step_mse = Objective(lambda o, y: ((o - y) ** 2).mean(-1) / N, reduction="sum")
    ref = run_sequence(OTTT(), b, xs, ys, per_step_mse, apply=apply_to_model(b, sgd(b)))
    assert_same_params(a, b)
    torch.testing.assert_close(out, ref.outputs.transpose(0, 1))
    # the returned loss is the sum of the step losses (F.mse_loss at each step)
    with torch.no_grad():
        want = sum(F.mse_loss(ref.outputs[t], ys[t]) for t in range(T))
    torch.testing.assert_close(loss, want)
    assert loss.dim() == 0


def test_ottt_helper_runs_sltt_when_given_the_rule():
    xs, ys = data(2)
    a, b = net(), net()
    ottt_online_training(
        a, sgd(a), xs.transpose(0, 1), ys.transpose(0, 1), F.mse_loss, True, rule=SLTT()
    )
    Trainer(b, SLTT(chunk_size=1), Objective("mse"), optimizer=sgd(b)).fit([(xs, ys)], epochs=1)
    assert_same_params(a, b)
    with pytest.raises(TypeError, match="OTTT or SLTT"):
        ottt_online_training(a, sgd(a), xs, ys, F.mse_loss, True, rule=FPTT())


def test_fptt_helper_equals_the_trainer_over_several_sequences():
    seqs = [data(3), data(4), data(5)]
    a, b = net(), net()
    opt_a = sgd(a)
    w_ra = fptt_online_training_init_w_ra(opt_a)
    assert isinstance(w_ra, list) and len(w_ra) == len(list(a.parameters()))
    for xs, ys in seqs:  # time-first, like SpikingJelly's fptt_online_training
        assert fptt_online_training(a, opt_a, xs, ys, F.mse_loss, 0.2, w_ra) is None
    trainer = Trainer(b, FPTT(0.2), Objective("mse"), optimizer=sgd(b))
    trainer.fit(seqs, epochs=1)
    assert_same_params(a, b)
    for w, (n, _) in zip(w_ra, b.named_parameters()):
        torch.testing.assert_close(w, trainer.carry.w_bar[n], rtol=1e-12, atol=1e-14)
    # a plain list restarts the correction at zero each call: same as a fresh carry per call
    c, d = net(), net()
    opt_c, opt_d = sgd(c), sgd(d)
    plain = [p.detach().clone() for p in c.parameters()]
    rule = FPTT(0.2)
    carry = rule.init(d, None)
    for xs, ys in seqs[:2]:
        fptt_online_training(c, opt_c, xs, ys, F.mse_loss, 0.2, plain)
        res = run_sequence(
            rule,
            d,
            xs,
            ys,
            Objective("mse"),
            carry=carry._replace(lam={n: torch.zeros_like(t) for n, t in carry.lam.items()}),
            apply=apply_to_model(d, opt_d),
        )
        carry = res.carry
    assert_same_params(c, d)


def test_mismatched_time_lengths_and_wrong_arguments_raise():
    xs, ys = data(6)
    model = net()
    opt = sgd(model)
    w_ra = fptt_online_training_init_w_ra(opt)
    with pytest.raises(ValueError, match=r"time length.*time-first"):
        fptt_online_training(model, opt, xs, ys[:-1], F.mse_loss, 0.1, w_ra)
    with pytest.raises(ValueError, match=r"time length.*batch-first"):
        ottt_online_training(
            model, opt, xs.transpose(0, 1), ys[:-1].transpose(0, 1), F.mse_loss, True
        )
    with pytest.raises(ValueError, match="batch size"):
        ottt_online_training(
            model, opt, xs.transpose(0, 1), ys[:, :-1].transpose(0, 1), F.mse_loss, True
        )
    with pytest.raises(ValueError, match="one tensor per optimizer parameter"):
        fptt_online_training(model, opt, xs, ys, F.mse_loss, 0.1, w_ra[:-1])
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="not a parameter of `model`"):
        ottt_online_training(model, other, xs.transpose(0, 1), ys.transpose(0, 1), F.mse_loss, True)
    with pytest.raises(ValueError, match="scalar"):
        ottt_online_training(model, opt, xs.transpose(0, 1), ys.transpose(0, 1),
                             lambda y, t: F.mse_loss(y, t, reduction="none"), True)  # fmt: skip
    with pytest.raises(TypeError, match="chronograd cell"):
        fptt_online_training(torch.nn.Linear(5, 3), opt, xs, ys, F.mse_loss, 0.1, w_ra)


def test_init_w_ra_clones_in_optimizer_order():
    model = net()
    groups = [
        {"params": [model.layers[1].input.weight]},
        {"params": [model.layers[0].input.weight]},
    ]
    opt = torch.optim.SGD(groups, lr=0.1)
    w_ra = fptt_online_training_init_w_ra(opt)
    assert isinstance(w_ra, RunningAverages) and len(w_ra) == 2
    assert (
        torch.equal(w_ra[0], model.layers[1].input.weight)
        and w_ra[0] is not model.layers[1].input.weight
    )
    assert torch.equal(w_ra[1], model.layers[0].input.weight)
    # FPTT trains exactly the optimizer's parameters
    before = copy.deepcopy(model.layers[1].input.bias.detach())
    xs, ys = data(7)
    fptt_online_training(model, opt, xs, ys, F.mse_loss, 0.1, w_ra)
    torch.testing.assert_close(model.layers[1].input.bias, before)
