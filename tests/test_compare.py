"""`chronograd compare`: end to end on a tiny configuration, the JSON schema, skipped rules."""

import csv
import json
import math
from dataclasses import dataclass
from typing import Any, final

import pytest
import torch

from chronograd import rules
from chronograd.cli import main
from chronograd.comparison import side_by_side as compare_mod
from chronograd.comparison.side_by_side import compare
from chronograd.rules import BPTT, LearningRule, RuleStep
from chronograd.sequence import unroll

T = 45  # evidence with time_scale=0.02
TINY = ["--task", "evidence", "--task-opt", "time_scale=0.02", "--task-opt", "val_batches=1",
        "--hidden", "8", "--epochs", "2", "--batches", "2", "--batch-size", "4",
        "--align-batch", "4", "--quiet"]  # fmt: skip
API = dict(
    task_options={"time_scale": 0.02, "val_batches": 1}, hidden=8, epochs=2, batches=2,
    batch_size=4, align_batch=4, memory=False, log=lambda _: None,
)  # fmt: skip


@final
@dataclass(frozen=True)
class NotForThisModel(LearningRule):
    """Refuses every model (what a rule needing, e.g., a model without recurrence does)."""

    @property
    def chunk_size(self) -> int | None:
        return None

    def check_model(self, model: torch.nn.Module) -> None:
        raise TypeError(
            "NotForThisModel needs a model without recurrent weights; use recurrent=False"
        )

    def init(self, model: Any, state: Any) -> Any:
        self.check_model(model)

    def update(self, *args: Any) -> RuleStep:
        raise AssertionError("never reached: check_model refuses the model")


@final
@dataclass(frozen=True)
class BreaksOnFirstUse(LearningRule):
    """Applies on paper, raises a ValueError when first run."""

    @property
    def chunk_size(self) -> int | None:
        return None

    def init(self, model: Any, state: Any) -> Any:
        return ()

    def update(self, *args: Any) -> RuleStep:
        raise ValueError("this rule cannot handle a cross-entropy objective")


@final
@dataclass(frozen=True)
class DirectDescent(LearningRule):
    """No optimizer: returns the update ``-η g`` (g the BPTT gradient) directly, like RLS."""

    eta: float = 0.05

    @property
    def chunk_size(self) -> int | None:
        return None

    def init(self, model: Any, state: Any) -> Any:
        return ()

    def update(self, model, chunk, state, carry, objective) -> RuleStep:
        step = BPTT(params=self.params).update(model, chunk, state, carry, objective)
        updates = {n: -self.eta * g for n, g in step.grads.items()}
        return RuleStep({}, step.state, carry, step.loss, step.outputs, updates=updates)


@pytest.fixture
def registered():
    """Register the fake rules for one test and remove them afterwards."""
    fakes = {"not-for-this": NotForThisModel, "breaks": BreaksOnFirstUse, "direct": DirectDescent}
    for name, factory in fakes.items():
        rules.register(name, factory)
    yield fakes
    for name in fakes:
        del rules.RULES[name]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def test_compare_end_to_end_reports_every_rule_and_documents_every_field(tmp_path, registered):
    out = tmp_path / "cmp"
    argv = ["compare", *TINY, "--rules", "bptt,tbptt,no-such-rule,not-for-this,breaks",
            "--rule-opt", f"tbptt.chunk_size={T}", "--raster", "--no-memory", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads((out / "compare.json").read_text())
    assert doc["schema"] == "chronograd.compare/1"
    by = {e["name"]: e for e in doc["rules"]}
    assert list(by) == ["bptt", "tbptt", "no-such-rule", "not-for-this", "breaks"]
    assert by["no-such-rule"]["status"] == "skipped"
    assert "not available in this installation" in by["no-such-rule"]["reason"]
    assert by["not-for-this"]["status"] == "skipped"
    assert "does not apply" in by["not-for-this"]["reason"]
    assert "recurrent=False" in by["not-for-this"]["reason"]
    assert by["breaks"]["status"] == "skipped"
    assert "fails on first use" in by["breaks"]["reason"]

    # every field is described in the module docstring (the documented schema)
    doc_text = compare_mod.__doc__
    for key in list(doc) + list(doc["config"]) + list(by["bptt"]) + list(doc["metric"]):
        assert key in doc_text, f"{key!r} is not documented in chronograd.comparison.side_by_side"
    for name in ("bptt", "tbptt"):
        e = by[name]
        assert e["status"] == "ok" and e["reason"] is None and e["optimizer"] == "adam"
        for key in ("final_metric", "best_metric", "final_val_loss", "final_loss", "ms_per_step",
                    "seconds"):  # fmt: skip
            assert _finite(e[key]), (name, key, e[key])
        assert len(e["history"]) == 2
        al = e["alignment"]
        assert al["direction"] == "gradient"
        for phase in ("init", "end"):
            assert set(al[phase]["params"]) == {n for n, _ in _model_params()}
            for a in [al[phase]["all"], *al[phase]["params"].values()]:
                assert _finite(a["cosine"]) and _finite(a["rel_error"])
    # TBPTT with k1 = T is BPTT: alignment 1 (and the same learning curve, same init and data)
    for phase in ("init", "end"):
        assert by["tbptt"]["alignment"][phase]["all"]["cosine"] == pytest.approx(1.0, abs=1e-6)
        assert by["tbptt"]["alignment"][phase]["all"]["rel_error"] < 1e-5
    assert by["tbptt"]["chunk"] == T and by["bptt"]["chunk"] is None
    assert [r["loss"] for r in by["tbptt"]["history"]] == pytest.approx(
        [r["loss"] for r in by["bptt"]["history"]], rel=1e-5
    )
    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["rule"] for r in rows] == list(by)
    assert "not available" in rows[2]["reason"]
    table = (out / "compare.md").read_text()
    assert "| tbptt |" in table and "| not-for-this | skipped |" in table
    assert "not available in this installation: no-such-rule" in table
    for png in ("learning_curves.png", "alignment.png", "raster_bptt.png", "raster_tbptt.png"):
        assert (out / png).stat().st_size > 1000
    assert "--rule-opt tbptt.chunk_size=45" in doc["command"]


def _model_params():
    from chronograd.comparison.common import make_task, model_for_task

    task = make_task("evidence", options={"time_scale": 0.02})
    return model_for_task(task, None, 8, 0).named_parameters()


def test_rule_without_optimizer_trains_and_is_aligned_by_its_update(registered):
    doc = compare("evidence", ["direct", "bptt"], **API)
    e = doc["rules"][0]
    assert e["status"] == "ok", e["reason"]
    assert e["optimizer"] is None
    assert e["alignment"]["direction"] == "update"
    # its update is -eta * the BPTT gradient: perfectly aligned; no relative error for a step
    assert e["alignment"]["init"]["all"]["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert e["alignment"]["init"]["all"]["rel_error"] is None
    assert e["history"][0]["loss"] != e["history"][-1]["loss"]  # the updates were applied
    assert "lr" not in e["history"][0]  # no optimizer


def test_compare_is_deterministic_and_measures_memory_in_a_fresh_process():
    a = compare("evidence", "bptt", **API)
    b = compare("evidence", "bptt", **{**API, "memory": True})
    assert a["rules"][0]["history"][-1]["loss"] == b["rules"][0]["history"][-1]["loss"]
    assert a["rules"][0]["final_metric"] == b["rules"][0]["final_metric"]
    assert a["rules"][0]["peak_memory_bytes"] is None and "not measured" in a["memory"]
    e = b["rules"][0]
    assert e["memory_error"] is None and _finite(e["peak_memory_bytes"])
    assert e["peak_memory_bytes"] > 0


def test_options_that_do_not_build_and_the_time_guard_are_reported():
    doc = compare(
        "evidence", "bptt,tbptt", rule_options={"bptt": {"no_such_option": 1}},
        max_seconds=1e-9, **API,
    )  # fmt: skip
    bptt, tbptt = doc["rules"]
    assert bptt["status"] == "skipped" and "cannot be built" in bptt["reason"]
    assert tbptt["status"] == "skipped" and "max_seconds" in tbptt["reason"]


def test_bad_arguments_are_one_line_errors(capsys):
    assert main(["compare", *TINY, "--rules", "bptt", "--rule-opt", "k1=3"]) == 2
    assert "RULE.KEY=VALUE" in capsys.readouterr().err
    assert main(["compare", *TINY, "--rules", " , "]) == 2
    with pytest.raises(ValueError, match="epochs"):
        compare("evidence", "bptt", **{**API, "epochs": 0})


def test_update_alignment_points_against_the_gradient():
    g = {"w": torch.tensor([1.0, 2.0])}
    al = compare_mod.alignments({"w": torch.tensor([-0.1, -0.2])}, g, update=True)
    assert al["all"]["cosine"] == pytest.approx(1.0) and al["all"]["rel_error"] is None
    assert compare_mod._is_direct({"w": torch.zeros(2)}, {"w": torch.ones(2)})
    assert not compare_mod._is_direct({"w": torch.ones(2)}, {"w": torch.ones(2)})
    assert not compare_mod._is_direct({"w": torch.zeros(2)}, None)
    with pytest.raises(ValueError, match="neither"):
        compare_mod.alignments({}, g)


def test_alignment_is_the_public_gradient_alignment():
    from chronograd.comparison.common import make_task, model_for_task
    from chronograd.testing import gradient_alignment

    doc = compare("evidence", "tbptt", **{**API, "epochs": 1, "batches": 1})
    reported = doc["rules"][0]["alignment"]["init"]
    task = make_task("evidence", options=API["task_options"])
    model = model_for_task(task, None, 8, 0)
    xs, ys = task.batch(4, seed=0)
    expected = gradient_alignment(rules.get("tbptt", chunk_size=5), model, xs, ys, task.objective)
    assert doc["rules"][0]["options"] == {"chunk_size": 5}  # RULE_DEFAULTS: ceil(T / 10)
    assert reported["all"]["cosine"] == pytest.approx(expected["all"].cosine, rel=1e-6)
    assert reported["all"]["rel_error"] == pytest.approx(expected["all"].rel_error, rel=1e-5)
    assert reported["all"]["rel_error"] > 1e-3  # truncation loses part of the gradient


def test_raster_command_from_a_run_directory(tmp_path):
    from chronograd.comparison.common import make_task, model_for_task
    from chronograd.training import save

    run = tmp_path / "run"
    task = make_task("evidence", options={"time_scale": 0.02})
    model = model_for_task(task, "lif", 6, 0)
    with torch.no_grad():
        model.layers[0].input.weight.mul_(3.0)  # differs from a fresh model: the file is used
    save({"model": model.state_dict()}, run / "checkpoint.pt")
    (run / "metrics.json").write_text(json.dumps({"task": "evidence", "cell": "lif", "hidden": 6}))
    argv = ["raster", "--run", str(run), "--task-opt", "time_scale=0.02"]
    assert main(argv) == 0
    assert (run / "raster.png").stat().st_size > 1000
    x, _ = next(iter(task.val()))
    fresh = model_for_task(task, "lif", 6, 0)
    assert not torch.equal(unroll(fresh, x[:, :1])[0], unroll(model, x[:, :1])[0])
    assert main(["raster", "--run", str(tmp_path / "missing")]) == 2
