"""RLS: persistence and checkpoints of P, device and dtype, validation of options, models and
objectives."""

import pytest
import torch
from torch import nn

from chronograd.cells import LeakyReadout, LeakyRNN, Map, Stack, WilsonCowan
from chronograd.objectives import Objective
from chronograd.rules import RLS, get
from chronograd.rules.rls import RLSCarry
from chronograd.training import Trainer
from chronograd.transforms import clip_by_global_norm, ema
from tests.test_rls import D, linear_data, linear_model, train


@pytest.fixture(autouse=True)
def _one_thread():
    """Small sequential tensor work: one thread avoids contention on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- persistence and checkpoints --------------------------------------------------------------
def test_p_persists_across_sequences_and_survives_a_checkpoint(tmp_path):
    batches = [linear_data(seed=s) for s in range(4)]
    model = linear_model()
    trainer = Trainer(model, RLS(delta=0.2, forgetting=0.99), Objective("mse"), optimizer=False)
    trainer.fit(batches[:2], epochs=1)
    assert isinstance(trainer.carry, RLSCarry) and trainer.carry.steps == 24
    path = trainer.save_checkpoint(tmp_path / "rls.pt")
    saved = trainer.rule.carry_state_dict(trainer.carry)
    snapshot = {k: P.clone() for k, P in saved["P"].items()}

    other = linear_model(seed=9)
    resumed = Trainer(other, RLS(delta=0.2, forgetting=0.99), Objective("mse"), optimizer=False)
    resumed.resume(path)
    assert resumed.carry.P.keys() == trainer.carry.P.keys()
    for key, P in trainer.carry.P.items():
        assert torch.equal(resumed.carry.P[key], P)
        assert resumed.carry.P[key].device == model.module.weight.device
    trainer.fit(batches, epochs=2)
    resumed.fit(batches, epochs=2)
    for key, P in saved["P"].items():  # P is updated in place; the saved copy is not
        assert torch.equal(P, snapshot[key]) and not torch.equal(P, trainer.carry.P[key])
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)


def test_p_dtype_and_device_follow_the_parameter_unless_asked():
    model = Map(nn.Linear(3, 2))  # float32
    x, y = torch.randn(4, 2, 3), torch.randn(4, 2, 2)
    carry = train(RLS(), model, x, y).carry
    assert carry.P["module.weight"].dtype == torch.float32
    carry = train(RLS(p_dtype="float64"), model, x, y).carry
    assert carry.P["module.weight"].dtype == torch.float64
    assert model.module.weight.dtype == torch.float32


@pytest.mark.gpu
def test_p_lives_on_the_parameter_device():
    model = Map(nn.Linear(3, 2)).cuda()
    x, y = torch.randn(4, 2, 3, device="cuda"), torch.randn(4, 2, 2, device="cuda")
    for strategy in ("inputs", "jacobian"):
        carry = train(RLS(strategy=strategy), model, x, y).carry
        assert all(P.device.type == "cuda" for P in carry.P.values())


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delta": 0.0}, "delta must be > 0"),
        ({"delta": -1.0}, "delta must be > 0"),
        ({"forgetting": 0.0}, "forgetting must lie in"),
        ({"forgetting": 1.5}, "forgetting must lie in"),
        ({"strategy": "output"}, "unknown RLS strategy 'output'"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"batch_update": "mean"}, "batch_update"),
        ({"p_dtype": "float16"}, "p_dtype"),
        ({"max_p_bytes": 0}, "max_p_bytes"),
    ],
)
def test_invalid_hyperparameters_raise(options, message):
    with pytest.raises(ValueError, match=message):
        RLS(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"accumulate": True}, "accumulate=True does not apply"),
        ({"transform": ema(0.5)}, "do not apply to RLS"),
        ({"transform": clip_by_global_norm(1.0)}, "do not apply to RLS"),
    ],
)
def test_gradient_options_do_not_apply_to_rls(options, message):
    with pytest.raises(ValueError, match=message):
        Trainer(linear_model(), RLS(), Objective("mse"), optimizer=False, **options)


def test_unknown_options_raise_and_the_registry_builds_rls():
    with pytest.raises(TypeError):
        RLS(lambda_=0.9)
    rule = get("rls", strategy="grad", forgetting=0.9)
    assert isinstance(rule, RLS) and rule.strategy == "grad" and rule.chunk_size == 1


def test_check_model_refuses_what_a_strategy_cannot_train():
    wc = WilsonCowan(2, 3)
    with pytest.raises(TypeError, match=r"'log_tau'.*not one"):
        RLS(strategy="grad", params=("log_tau",)).check_model(wc)
    RLS(strategy="jacobian", params=("log_tau",)).check_model(wc)  # any parameter
    net = Stack(LeakyRNN(3, 8), LeakyReadout(8, 2))
    with pytest.raises(TypeError, match="trains the readout"):
        RLS(strategy="inputs").check_model(net)
    RLS(strategy="inputs", params=("layers.1.*",)).check_model(net)
    with pytest.raises(TypeError, match="onto themselves"):
        RLS(strategy="outputs", params=("layers.1.*",)).check_model(net)
    RLS(strategy="outputs", params=("recurrent_weight",)).check_model(wc)
    with pytest.raises(TypeError, match="must be a chronograd cell"):
        RLS().check_model(nn.Linear(2, 2))


def test_inputs_refuses_a_layer_whose_output_is_not_the_model_output():
    model = LeakyReadout(3, 2, kappa=0.5).double()
    x, y = torch.randn(5, 2, 3, dtype=D), torch.randn(5, 2, 2, dtype=D)
    with pytest.raises(ValueError, match=r"must produce the model's output.*strategy='grad'"):
        train(RLS(strategy="inputs"), model, x, y)
    train(RLS(strategy="grad"), model, x, y)  # grad handles it


def test_jacobian_refuses_a_p_that_would_not_fit():
    model = Map(nn.Linear(20, 20))
    x, y = torch.randn(3, 1, 20), torch.randn(3, 1, 20)
    rule = RLS(strategy="jacobian", max_p_bytes=100_000)
    with pytest.raises(ValueError, match=r"module.weight \(400\).*n = 420.*689.1 KiB.*max_p_bytes"):
        train(rule, model, x, y)
    train(RLS(strategy="scaled_jacobian"), model, x, y)  # fits under the default threshold


@pytest.mark.parametrize(
    ("objective", "strategy", "message"),
    [
        (Objective("cross_entropy"), "inputs", "needs Objective\\('mse'\\)"),
        (Objective("cross_entropy"), "jacobian", "needs Objective\\('mse'\\)"),
        (Objective("mse", maximize=True), "grad", "maximize"),
        (Objective("mse", regularizers=[lambda: torch.zeros(())]), "inputs", "regularizers"),
    ],
)
def test_objectives_rls_cannot_minimise_raise(objective, strategy, message):
    model = linear_model()
    x = torch.randn(3, 2, 4, dtype=D)
    y = (
        torch.randint(0, 2, (3, 2))
        if objective.criterion == "cross_entropy"
        else torch.randn(3, 2, 2, dtype=D)
    )
    with pytest.raises(ValueError, match=message):
        train(RLS(strategy=strategy), model, x, y, objective)


def test_the_trainer_builds_no_optimizer_for_rls():
    model = Stack(Map(torch.nn.Identity(), 3, 3), LeakyReadout(3, 2))
    assert Trainer(model, RLS(), Objective("mse")).optimizer is None
