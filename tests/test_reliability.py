import signal
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import torch

import chronograd as cg
from chronograd import TBPTT, Objective
from chronograd.cells import GRU, LeakyReadout, Stack
from chronograd.reproducibility import seed_everything
from chronograd.rules import LearningRule, NonFinite
from chronograd.rules.driver import NonFiniteError
from chronograd.training import Trainer, run_sequence

D = torch.float64


@dataclass(frozen=True)
class Poisoned(LearningRule):
    """TBPTT(4) whose gradient (and carry) gets a NaN and an inf in chunk ``at``."""

    inner: LearningRule = field(default_factory=lambda: TBPTT(4))
    at: int = 1

    @property
    def chunk_size(self):
        return self.inner.chunk_size

    def init(self, model, state):
        return self.inner.init(model, state)

    def update(self, model, chunk, state, carry, objective):
        step = self.inner.update(model, chunk, state, carry, objective)
        if chunk.span.start // 4 != self.at:
            return step
        grads = dict(step.grads)
        g = grads["layers.1.input.weight"].clone()
        g[0, 0], g[0, 1] = float("nan"), float("inf")
        grads["layers.1.input.weight"] = g
        return step._replace(
            grads=grads,
            state=(step.state[0]._replace(h=step.state[0].h * float("nan")), step.state[1]),
        )


def model():
    torch.manual_seed(0)
    return Stack(GRU(3, 5), LeakyReadout(5, 2)).double()


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 2, 3, generator=g, dtype=D), torch.randn(12, 2, 2, generator=g, dtype=D)


def test_nonfinite_raise_names_the_parameter_and_steps():
    xs, ys = data()
    with pytest.raises(NonFiniteError, match=r"layers.1.input.weight.*steps \[4, 8\)"):
        run_sequence(Poisoned(), model(), xs, ys, Objective("mse"), apply=lambda up: None)


def test_nonfinite_skip_drops_the_update_counts_it_and_repairs_the_state():
    xs, ys = data()
    applied = []
    res = run_sequence(
        Poisoned(nonfinite="skip"),
        model(),
        xs,
        ys,
        Objective("mse"),
        apply=lambda up: applied.append(up.grads),
    )
    assert res.nonfinite == 1 and len(applied) == 2  # 3 chunks, the poisoned one dropped
    for g in applied:
        assert all(torch.isfinite(v).all() for v in g.values())
    assert torch.isfinite(res.state[0].h).all()


def test_nonfinite_replace_uses_the_given_values():
    xs, ys = data()
    applied = []
    rule = Poisoned(nonfinite=NonFinite("replace", nan=0.0, posinf=1.0, neginf=-1.0))
    res = run_sequence(
        rule, model(), xs, ys, Objective("mse"), apply=lambda up: applied.append(up.grads)
    )
    assert res.nonfinite == 1 and len(applied) == 3
    w = applied[1]["layers.1.input.weight"]
    assert w[0, 0] == 0.0 and w[0, 1] == 1.0


def test_nonfinite_count_reaches_the_history():
    xs, ys = data()
    trainer = Trainer(model(), Poisoned(nonfinite="skip"), Objective("mse"))
    hist = trainer.fit([(xs, ys), (xs, ys)], epochs=1)
    assert hist["nonfinite"] == [2.0]
    with pytest.raises(ValueError, match="nonfinite must be"):
        TBPTT(4, nonfinite="ignore")


@pytest.mark.parametrize(
    "xs, match",
    [
        (
            torch.randn(12, 2, 3, dtype=torch.float32),
            "inputs are torch.float32 but the model's parameters are torch.float64",
        ),
        (torch.full((12, 2, 3), float("nan"), dtype=D), "inputs contain NaN or inf"),
    ],
)
def test_inputs_are_validated_against_the_model(xs, match):
    _, ys = data()
    with pytest.raises(ValueError, match=match):
        cg.gradient(cg.BPTT(), model(), xs, ys, Objective("mse"))


def test_same_seed_same_run():
    def run():
        seed_everything(7, deterministic=True)
        m = Stack(GRU(3, 5), LeakyReadout(5, 2))
        xs, ys = torch.randn(12, 4, 3), torch.randn(12, 4, 2)
        t = Trainer(m, TBPTT(4), Objective("mse"), lr=1e-2)
        t.fit([(xs, ys)], epochs=3)
        return torch.cat([p.flatten() for p in m.parameters()])

    try:
        a, b = run(), run()
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(a, b)


def _worker(*args, check=True):
    return subprocess.run(
        [sys.executable, "-m", "tests.resume_worker", *map(str, args)],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path):
    _worker("full", tmp_path)
    killed = _worker(
        "kill", tmp_path, 9, check=False
    )  # 6 batches per epoch: batch 9 is mid-epoch 2
    assert killed.returncode == -signal.SIGKILL
    state = cg.training.load(tmp_path / "ck" / "last.pt")
    assert state["progress"]["batches"] == 2 and state["trainer"]["epoch"] == 2
    _worker("resume", tmp_path)
    full, resumed = torch.load(tmp_path / "full.pt"), torch.load(tmp_path / "resume.pt")
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    hf = torch.load(tmp_path / "full_history.pt")["records"]
    hr = torch.load(tmp_path / "resume_history.pt")["records"]
    assert [r["loss"] for r in hf] == [r["loss"] for r in hr]


def test_sigterm_finishes_the_batch_and_leaves_a_loadable_checkpoint(tmp_path):
    out = _worker("term", tmp_path, 4, check=False)
    assert out.returncode == 143, out.stderr
    state = cg.training.load(tmp_path / "ck" / "last.pt")
    assert state["trainer"]["iteration"] == 4 and state["progress"]["batches"] == 4
    _worker("full", tmp_path)
    _worker("resume", tmp_path)
    full, resumed = torch.load(tmp_path / "full.pt"), torch.load(tmp_path / "resume.pt")
    assert all(torch.equal(full[k], resumed[k]) for k in full)
