"""e-prop's options: feedback generators, adaptive feedback, checkpoints and their switches,
learning rates, the non-finite policy, model checks, and training with the trainer."""

import itertools
import math

import pytest
import torch

import chronograd as cg
from chronograd.cells import ALIF, GRU, LIF, LeakyReadout, LeakyRNN, Stack, lsnn_beta
from chronograd.rules import EProp, NonFinite
from chronograd.rules.driver import NonFiniteError
from chronograd.traces.feedback import GENERATORS, NORM_CLIP, random_feedback
from chronograd.training import Event, Trainer
from chronograd.transforms import clip_by_global_norm
from tests.test_regularization_training import (
    check_all,
    check_penalty_added_once_per_update,
    constraints_for,
)

D = torch.float64


def lsnn(H=6, I=3, O=2, kappa=0.8, seed=0):
    torch.manual_seed(seed)
    core = ALIF(I, H, tau_mem=4.0, tau_adapt=8.0, beta=lsnn_beta(H // 2, H - H // 2, 1.0),
                threshold=0.5)  # fmt: skip
    return Stack(core, LeakyReadout(H, O, kappa=kappa)).double()


def data(T=16, B=4, I=3, O=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(T, B, I, generator=g, dtype=D) * 2
    return x, torch.randn(T, B, O, generator=g, dtype=D) * 0.5


def batches(epoch):
    return [data(seed=10 * epoch + i) for i in range(2)]


# -- feedback generators -------------------------------------------------------------------------
@pytest.mark.parametrize("gen", GENERATORS)
def test_each_feedback_generator_is_seeded_and_norm_clipped(gen):
    a = random_feedback(40, 3, gen, seed=1, dtype=D)
    assert a.shape == (40, 3) and a.dtype == D
    assert torch.equal(a, random_feedback(40, 3, gen, seed=1, dtype=D))
    if gen != "ones":
        assert not torch.equal(a, random_feedback(40, 3, gen, seed=2, dtype=D))
    assert float(a.norm()) <= NORM_CLIP[gen] * (1 + 1e-12)
    if NORM_CLIP[gen] < math.inf:
        assert float(a.norm()) == pytest.approx(NORM_CLIP[gen])  # every such draw exceeds 1
    small = random_feedback(40, 3, gen, seed=1, norm_clip=0.25, dtype=D)
    assert float(small.norm()) == pytest.approx(0.25)
    torch.testing.assert_close(small / small.norm(), a / a.norm())  # clipping only rescales


def test_feedback_generators_draw_what_they_say():
    H, O = 400, 4
    x = random_feedback(H, O, "xavier_normal", seed=0, dtype=D)
    assert float(x.std()) == pytest.approx(math.sqrt(2 / (H + O)), rel=0.1)
    k = random_feedback(H, O, "kaiming_normal", seed=0, dtype=D)
    assert float(k.std()) == pytest.approx(math.sqrt(2 / O), rel=0.1)
    for gen in ("orthogonal", "unitary"):
        q = random_feedback(H, O, gen, seed=0, dtype=D)
        torch.testing.assert_close(q.t() @ q, torch.eye(O, dtype=D))
    r = random_feedback(H, O, "rand", seed=0, norm_clip=math.inf, dtype=D)
    assert float(r.min()) >= 0 and float(r.max()) < 1
    n = random_feedback(H, O, "randn", seed=0, norm_clip=math.inf, dtype=D)
    assert float(n.std()) == pytest.approx(1.0, rel=0.1)
    assert torch.equal(random_feedback(H, O, "ones", dtype=D), torch.ones(H, O, dtype=D) / 40)


def test_the_rule_draws_its_feedback_once_from_its_seed():
    model = lsnn()
    state = model.init_state(2, dtype=D)
    rule = EProp(feedback="random", feedback_init="orthogonal", feedback_seed=7)
    b = rule.init(model, state).feedback
    torch.testing.assert_close(b, random_feedback(6, 2, "orthogonal", seed=7, dtype=D))
    carry = rule.start_sequence(model, state, rule.init(model, state))
    assert torch.equal(carry.feedback, b)  # kept across sequences
    assert EProp().init(model, state).feedback is None  # symmetric: W_out^T, read live
    torch.testing.assert_close(
        EProp().feedback_matrix(model, None), model.layers[1].input.weight.t()
    )


# -- adaptive feedback ---------------------------------------------------------------------------
@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_adaptive_feedback_follows_the_readout_updates(decay):
    model = lsnn()
    w = model.layers[1].input.weight
    rule = EProp(feedback="adaptive", feedback_decay=decay, chunk_size=4)
    trainer = Trainer(model, rule, cg.Objective("mse"), torch.optim.SGD(model.parameters(), lr=0.5))
    seen = [w.detach().clone()]
    trainer.add_handler(Event.CHUNK_COMPLETED, lambda t: seen.append(w.detach().clone()))
    b0 = rule.init(model, model.init_state(1, dtype=D)).feedback
    trainer.fit([data()], epochs=1)
    want = b0
    for old, new in itertools.pairwise(seen):  # one update per chunk
        want = want + (new - old).t() - decay * want
    assert len(seen) == 5 and not torch.equal(seen[0], seen[-1])
    torch.testing.assert_close(trainer.carry.feedback, want)
    if decay == 0.0:
        torch.testing.assert_close(trainer.carry.feedback - b0, (seen[-1] - seen[0]).t())


# -- checkpoints -----------------------------------------------------------------------------------
def trained(tmp_path, **opts):
    model = lsnn()
    rule = EProp(feedback="adaptive", feedback_seed=1, chunk_size=8, **opts)
    trainer = Trainer(model, rule, cg.Objective("mse"), lr=0.05)
    trainer.fit(batches, epochs=1)
    return trainer, trainer.save_checkpoint(tmp_path / "c.pt")


def fresh(**opts):
    model = lsnn(seed=5)
    rule = EProp(feedback="adaptive", feedback_seed=2, chunk_size=8, **opts)
    return Trainer(model, rule, cg.Objective("mse"), lr=0.05)


def test_feedback_and_optimizer_state_survive_a_checkpoint(tmp_path):
    trainer, path = trained(tmp_path)
    b = trainer.carry.feedback
    assert not torch.equal(b, random_feedback(6, 2, seed=1, dtype=D))  # it adapted
    other = fresh()
    other.resume(path)
    assert torch.equal(other.carry.feedback, b)
    assert torch.equal(other.carry.w_out, trainer.carry.w_out)
    sa, sb = trainer.optimizer.state_dict()["state"], other.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and all(
        torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa
    )
    other.fit(batches, epochs=2)  # and training goes on from there
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved["rule"]["feedback"], b)


def test_checkpoint_switches(tmp_path):
    _, path = trained(tmp_path, save_feedback=False, save_state=False)
    saved = torch.load(path, weights_only=True)
    assert saved["rule"] is None and saved["optimizer"] is None
    _, path = trained(tmp_path)
    other = fresh(load_feedback=False, load_state=False)
    other.resume(path)
    assert other.carry is None  # B is drawn again from this rule's seed at the next sequence
    assert not other.optimizer.state_dict()["state"]
    other.fit(batches, epochs=2)
    assert other.carry.feedback is not None


def test_loading_feedback_into_a_symmetric_rule_or_a_wrong_shape_raises():
    model = lsnn()
    with pytest.raises(ValueError, match="symmetric feedback"):
        EProp().load_carry_state_dict(model, {"feedback": torch.zeros(6, 2, dtype=D)})
    with pytest.raises(ValueError, match=r"shape \(6, 2\)"):
        EProp(feedback="random").load_carry_state_dict(model, {"feedback": torch.zeros(2, 6)})


# -- learning rates --------------------------------------------------------------------------------
def test_hidden_and_output_learning_rates():
    model = lsnn()
    rule = EProp()
    groups = rule.param_groups(model, lr=1e-4, output_lr=2e-4)
    assert [g["lr"] for g in groups] == [1e-4, 2e-4]
    hidden = {id(p) for p in model.layers[0].parameters()}
    assert {id(p) for p in groups[0]["params"]} == hidden
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.layers[1].parameters()}
    opt = rule.optimizer(model, lr=1e-4, output_lr=2e-4, cls=torch.optim.AdamW, weight_decay=0.0)
    assert isinstance(opt, torch.optim.AdamW) and [g["lr"] for g in opt.param_groups] == [
        1e-4,
        2e-4,
    ]
    only_out = EProp(params=("layers.1.*",)).param_groups(model, lr=1.0, output_lr=3.0)
    assert [g["lr"] for g in only_out] == [3.0]
    # in the trainer: the output weights move, the hidden ones stay with lr = 0
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(
        model, rule, cg.Objective("mse"), rule.optimizer(model, lr=0.0, output_lr=0.1)
    )
    trainer.fit(batches, epochs=1)
    moved = [not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)]
    assert moved == [False, False, True, True]  # w_in, w_rec | w_out, b_out


# -- non-finite values -----------------------------------------------------------------------------
def poisoned():
    model = lsnn()
    with torch.no_grad():
        model.layers[0].input.weight[2, 1] = float("nan")
    return model


def test_non_finite_gradients_raise_by_default():
    xs, ys = data()
    with pytest.raises(NonFiniteError, match="non-finite gradient"):
        cg.gradient(EProp(chunk_size=4), poisoned(), xs, ys, cg.Objective("mse"))


@pytest.mark.parametrize("method", ["traces", "reverse"])
def test_non_finite_gradients_and_traces_are_replaced_as_configured(method):
    xs, ys = data()
    rule = EProp(method=method, nonfinite=NonFinite("replace", nan=0.0, posinf=1.0, neginf=-1.0))
    res = cg.run_sequence(rule, poisoned(), xs, ys, cg.Objective("mse"))
    assert res.nonfinite == 1
    for g in res.grads.values():
        assert bool(torch.isfinite(g).all())
    online = EProp(chunk_size=4, nonfinite=NonFinite("replace", posinf=1.0, neginf=-1.0))
    res = cg.run_sequence(online, poisoned(), xs, ys, cg.Objective("mse"))
    assert res.nonfinite == 4  # every update
    assert res.carry.traces and all(
        bool(torch.isfinite(t).all()) for t in res.carry.traces.values()
    )


# -- which models ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model",
    [
        Stack(GRU(3, 4), LeakyReadout(4, 2)),
        Stack(LeakyRNN(3, 4), LeakyReadout(4, 2)),
        Stack(LIF(3, 4), LIF(4, 4), LeakyReadout(4, 2)),
        LIF(3, 4),
    ],
    ids=["gru", "rnn", "two-layers", "no-readout"],
)
def test_eprop_names_the_fix_for_models_it_cannot_train(model):
    with pytest.raises(TypeError, match=r"Stack\(LIF or ALIF, LeakyReadout\)"):
        EProp().check_model(model)
    with pytest.raises(TypeError, match="DRTRL / RTRL / BPTT"):
        Trainer(model, EProp(), cg.Objective("mse")).fit(
            [(torch.zeros(2, 1, 3), torch.zeros(2, 1, 2))], 1
        )


def test_eprop_adds_the_objective_penalty_once_per_update_and_keeps_constraints():
    torch.manual_seed(0)
    model = Stack(LIF(3, 6, tau_mem=3.0, threshold=0.3), LeakyReadout(6, 2, kappa=0.5)).double()
    check_penalty_added_once_per_update(EProp(chunk_size=4), model)
    signs, constraints = constraints_for(model)
    trainer = Trainer(model, EProp(chunk_size=4), cg.Objective("mse"), lr=0.05,
                      constraints=constraints)  # fmt: skip
    trainer.add_handler(Event.CHUNK_COMPLETED, lambda t: check_all(model, constraints, signs))
    trainer.fit(lambda e: [(x * 3, y) for x, y in batches(e)], epochs=1)


# -- training ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("opts", "lr"),
    [
        ({"feedback": "random", "rate_target": 0.05, "rate_reg": 0.1}, 3e-4),
        ({"feedback": "symmetric", "chunk_size": 10}, 1e-3),
        ({"feedback": "adaptive", "chunk_size": 1}, 2e-4),
    ],
    ids=["random", "symmetric-chunks", "adaptive-online"],
)
def test_the_trainer_trains_with_eprop(opts, lr):
    task = cg.tasks.get("pattern", time_scale=0.1, batches_per_epoch=4, outputs=2)
    torch.manual_seed(0)
    model = Stack(LIF(task.input_size, 30, tau_mem=3.0, threshold=0.6),
                  LeakyReadout(30, 2, kappa=math.exp(-1 / 3.0)))  # fmt: skip
    rule = EProp(**opts)
    opt = rule.optimizer(model, lr=lr, output_lr=10 * lr)  # the readout learns faster
    clip = clip_by_global_norm(1.0) if opts.get("chunk_size") == 10 else None
    history = Trainer(model, rule, task.objective, opt, transform=clip).fit(task.train, epochs=6)
    assert history["loss"][-1] < 0.75 * history["loss"][0]
