"""Regularizers and constraints inside training: never ignored, always enforced."""

import io

import pytest
import torch

import chronograd as cg
from chronograd import BPTT, TBPTT, Objective
from chronograd.cells import ALIF, LeakyReadout, LeakyRNN, Stack, lsnn_beta
from chronograd.constraints import DaleProjection, NoAutapses, SparsityMask
from chronograd.dale import connection_mask, neuron_signs, sign_violations
from chronograd.regularizers import L2, DaleHinge, DaleLawL2, ExcRatioTarget
from chronograd.rules import RULES
from chronograd.sequence import spans
from chronograd.training import (
    Event,
    ProgressBar,
    RegularizerStep,
    Trainer,
    apply_to_model,
    dale_metrics,
    regularizer_metrics,
    run_sequence,
)

D = torch.float64
H = 6
REC = "layers.0.recurrent.weight"


def rnn(seed=0):
    torch.manual_seed(seed)
    return Stack(LeakyRNN(3, H, alpha=0.3), LeakyReadout(H, 2)).double()


def data(T=16, B=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, 3, generator=g, dtype=D)
    return x, torch.cumsum(x[..., :2], 0) * 0.2


def batches(epoch):
    return [data(seed=100 * epoch + i) for i in range(2)]


# Options for rules whose defaults do not fit this small model; rules that update weights
# directly (no optimizer) go in NO_OPTIMIZER. Rules that cannot train the model are skipped by
# their own check_model. Every registered rule is tested below.
RULE_OPTIONS: dict[str, dict] = {"tbptt": {"chunk_size": 4}, "rls": {"strategy": "grad"}}
NO_OPTIMIZER: set[str] = {"rls"}


def spiking(seed=0):
    torch.manual_seed(seed)
    core = ALIF(3, H, tau_mem=3.0, tau_adapt=20.0, beta=lsnn_beta(H // 2, H - H // 2, 0.2))
    return Stack(core, LeakyReadout(H, 2, kappa=0.5)).double()


def model_and_rule(name):
    """The rate RNN, or a spiking LSNN for rules defined on spiking layers only (e-prop)."""
    rule = cg.rules.get(name, **RULE_OPTIONS.get(name, {}))
    for build in (rnn, spiking):
        model = build()
        try:
            rule.check_model(model)
        except TypeError as e:
            reason = str(e)
            continue
        return model, rule
    pytest.skip(f"{name} cannot train either test model: {reason}")


# -- the penalty reaches the gradient, once per update --------------------------------------------
def check_penalty_added_once_per_update(rule, model):
    xs, ys = data()
    named = dict(model.named_parameters())
    reg = DaleLawL2({REC: named[REC]}, alpha=0.5, pre_dim=1, seed=0, Lambda=0.3)
    plain = cg.gradient(rule, model, xs, ys, Objective("mse"))
    with_reg = cg.gradient(rule, model, xs, ys, Objective("mse", regularizers=[reg]))
    updates = len(list(spans(xs.shape[0], rule.chunk_length(xs.shape[0]))))
    (g_pen,) = torch.autograd.grad(reg(), [named[REC]])
    assert REC in with_reg
    for n in plain:
        extra = updates * g_pen if n == REC else torch.zeros_like(plain[n])
        torch.testing.assert_close(with_reg[n] - plain[n], extra, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(set(RULES) - NO_OPTIMIZER))
def test_penalty_gradient_is_added_once_per_update_by_every_rule(name):
    model, rule = model_and_rule(name)
    check_penalty_added_once_per_update(rule, model)


def test_penalty_gradient_is_added_once_per_update_with_tbptt_history():
    check_penalty_added_once_per_update(TBPTT(4, 8), rnn())


@pytest.mark.parametrize("rule", [BPTT(), TBPTT(4)], ids=["bptt", "tbptt"])
def test_a_regularizer_in_the_objective_changes_training(rule):
    def train(regularize):
        model = rnn()
        regs = [L2(model.named_parameters(), Lambda=0.05)] if regularize else []
        trainer = Trainer(model, rule, Objective("mse", regularizers=regs), lr=0.02)
        start = float(L2(model.named_parameters())().detach())
        trainer.fit(batches, epochs=4)
        return model, start, float(L2(model.named_parameters())().detach())

    m0, start0, end0 = train(False)
    m1, start1, end1 = train(True)
    assert start0 == start1
    assert end1 < start1  # the penalty decreased
    assert end1 < end0  # ... and training without it does not shrink the weights as much
    assert any(
        not torch.allclose(a, b) for a, b in zip(m0.parameters(), m1.parameters(), strict=True)
    )


def test_regularizing_a_parameter_the_rule_does_not_train_raises():
    model = rnn()
    reg = L2([model.layers[0].recurrent.weight])
    with pytest.raises(ValueError, match="does not train"):
        Trainer(model, BPTT(params=("layers.1.*",)), Objective("mse", regularizers=[reg]))
    other = rnn(seed=1)
    with pytest.raises(ValueError, match="no effect"):
        Trainer(model, BPTT(), Objective("mse", regularizers=[L2(other.parameters())]))


# -- constraints hold after every update of every rule --------------------------------------------
def constraints_for(model):
    w = model.layers[0].recurrent.weight
    signs = neuron_signs(H, inh_ratio=0.34, seed=0, dtype=D)
    mask = connection_mask((H, H), rho=0.6, seed=1)
    return signs, [DaleProjection(w, signs, pre_dim=1), NoAutapses(w), SparsityMask(w, mask)]


def check_all(model, constraints, signs):
    w = model.layers[0].recurrent.weight
    assert sign_violations(w, signs, pre_dim=1) == 0
    assert bool((torch.diagonal(w) == 0).all())
    for c in constraints:
        assert c.holds(), f"{type(c).__name__} violated"


@pytest.mark.parametrize("name", sorted(RULES))
def test_constraints_hold_after_every_update_of_every_rule(name):
    model, rule = model_and_rule(name)
    signs, constraints = constraints_for(model)
    w = model.layers[0].recurrent.weight
    assert not all(c.holds() for c in constraints)  # the test can fail: they start violated
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # 1. the driver's apply callback: checked right after each call
    opt = None if name in NO_OPTIMIZER else torch.optim.SGD(model.parameters(), lr=0.05)
    inner = apply_to_model(model, opt, constraints)
    calls = []

    def apply(update):
        inner(update)
        calls.append(1)
        check_all(model, constraints, signs)

    xs, ys = data()
    run_sequence(rule, model, xs, ys, Objective("mse"), apply=apply)
    assert calls
    # 2. the trainer: checked at every chunk end (after each update, accumulate=False)
    trainer = Trainer(
        model, rule, Objective("mse"), optimizer=False if name in NO_OPTIMIZER else None,
        lr=0.05, constraints=constraints,
    )  # fmt: skip
    checks = []
    trainer.add_handler(
        Event.CHUNK_COMPLETED, lambda t: checks.append(check_all(model, constraints, signs))
    )
    trainer.fit(batches, epochs=2)
    assert len(checks) == trainer.state.chunk > 0
    trained = rule.trained(model)
    assert any(not torch.equal(before[n], p) for n, p in trained.items())
    assert REC not in trained or not torch.equal(before[REC], w)


def test_constraints_argument_errors():
    model = rnn()
    _, constraints = constraints_for(model)
    with pytest.raises(TypeError, match="list of constraints"):
        Trainer(model, BPTT(), Objective("mse"), constraints=constraints[0])
    with pytest.raises(TypeError, match="callable"):
        Trainer(model, BPTT(), Objective("mse"), constraints=[1])
    with pytest.raises(TypeError, match="callable"):
        apply_to_model(model, None, [1])


# -- own optimizer, metrics, checkpoints ------------------------------------------------------------
@pytest.mark.parametrize("accumulate", [False, True])
def test_regularizer_step_runs_its_own_optimizer_after_every_update(accumulate):
    model = rnn()
    w = model.layers[0].recurrent.weight
    _, constraints = constraints_for(model)
    reg = ExcRatioTarget([w], target=0.2)
    step = RegularizerStep(reg, torch.optim.SGD([w], lr=0.5))
    trainer = Trainer(
        model, TBPTT(4), Objective("mse"), lr=0.01, constraints=constraints[1:],
        accumulate=accumulate,
    )  # fmt: skip
    updates = []
    trainer.add_handler(Event.BATCH_COMPLETED, lambda t: updates.append(1))
    step.attach(trainer)
    start = float(reg().detach())
    trainer.fit(batches, epochs=3)
    per_batch = 1 if accumulate else 4
    assert step.steps == per_batch * len(updates) == per_batch * 6
    assert float(reg().detach()) < start  # the penalty (not in the objective) went down
    assert all(c.holds() for c in constraints[1:])  # re-applied after the extra step


def test_metrics_reach_history_and_progress_bar():
    model = rnn()
    w = model.layers[0].recurrent.weight
    signs = neuron_signs(H, inh_ratio=0.5, seed=0, dtype=D)
    hinge = DaleHinge({"rec": w}, [signs[None, :].expand(H, H)], Lambda=0.1, name="dale")
    ratio = ExcRatioTarget([w], target=0.5, name="exc")
    metrics = {
        **regularizer_metrics(hinge, ratio),
        **dale_metrics(w, signs, pre_dim=1, name="rec"),
    }
    out = io.StringIO()
    trainer = Trainer(
        model, BPTT(), Objective("mse", regularizers=[hinge]), lr=0.05, metrics=metrics
    )
    ProgressBar(stream=out).attach(trainer)
    history = trainer.fit(batches, epochs=3, val=lambda e: [data(seed=999)])
    for key in ("dale", "dale_violations", "exc", "exc_exc_ratio", "rec_exc_ratio",
                "rec_inh_ratio", "rec_sign_violations"):  # fmt: skip
        assert key in history and f"val_{key}" in history
        assert f"{key} " in out.getvalue()
    v = sign_violations(w, signs, pre_dim=1)
    assert history.last("val_rec_sign_violations") == v == history.last("val_dale_violations")
    assert history.last("val_dale") == pytest.approx(float(hinge().detach()))
    assert history.last("val_rec_exc_ratio") == pytest.approx(float((w > 0).double().mean()))
    assert history["dale_violations"][-1] < history["dale_violations"][0]


def test_checkpoints_carry_reference_weights_and_constraint_buffers(tmp_path):
    def build(seed):
        model = rnn()
        w = model.layers[0].recurrent.weight
        reg = DaleLawL2([w], pre_dim=1, inh_first=False, inh_ratio=0.5, seed=seed)
        mask = connection_mask((H, H), rho=0.5, seed=seed)
        trainer = Trainer(
            model, BPTT(), Objective("mse", regularizers=[reg]), constraints=[SparsityMask(w, mask)]
        )
        return trainer, reg

    trainer, reg = build(seed=1)
    trainer.fit(batches, epochs=1)
    path = trainer.save_checkpoint(tmp_path / "c.pt")
    fresh, reg2 = build(seed=2)
    assert not torch.equal(reg.reference_0, reg2.reference_0)
    fresh.resume(path)
    assert torch.equal(reg.reference_0, reg2.reference_0)
    assert torch.equal(trainer.constraints[0].mask, fresh.constraints[0].mask)


@pytest.mark.gpu
def test_regularizers_and_constraints_follow_the_trainer_to_cuda():
    model = rnn()
    w = model.layers[0].recurrent.weight
    signs, constraints = constraints_for(model)
    reg = DaleLawL2([w], pre_dim=1, seed=0)
    trainer = Trainer(
        model, TBPTT(4), Objective("mse", regularizers=[reg]), device="cuda",
        constraints=constraints,
    )  # fmt: skip
    assert reg.reference_0.is_cuda and constraints[0].signs.is_cuda
    trainer.fit(lambda e: [tuple(t.cuda() for t in b) for b in batches(e)], epochs=1)
    check_all(model, constraints, signs.cuda())
