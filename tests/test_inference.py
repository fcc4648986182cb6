"""evaluate / predict: the run's model.pt loads with weights_only=True, the evaluation agrees
with the trainer's validation, predictions are the arg-max of the model's logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from chronograd.cli import main
from chronograd.inference import evaluate_model, load_model, predict, split_batches, task_of
from chronograd.sequence import unroll

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    args = ["train", "--format", "sequential-digits", "--epochs", "1", "--hidden", "16",
            "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    return out


def test_model_file_loads_with_weights_only(run):
    saved = torch.load(run / "model.pt", weights_only=True)
    assert saved["spec"]["cell"] == "gru" and saved["spec"]["hidden"] == 16
    assert saved["data"]["format"] == "sequential-digits"
    model, _ = load_model(run)
    ref = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k])


def test_evaluate_matches_training_validation_and_confusion_is_consistent(run, capsys):
    assert main(["evaluate", "--run", str(run)]) == 0
    report = json.loads((run / "evaluation.json").read_text())
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert report["accuracy"] == pytest.approx(final["val_accuracy"], abs=1e-6)
    assert report["loss"] == pytest.approx(final["val_loss"], rel=1e-5)
    conf = np.asarray(report["confusion"])
    assert conf.sum() == report["examples"]
    assert np.trace(conf) / conf.sum() == pytest.approx(report["accuracy"], abs=1e-6)
    for c, acc in report["per_class_accuracy"].items():
        assert acc == pytest.approx(conf[int(c), int(c)] / conf[int(c)].sum())
    assert (run / "confusion.png").stat().st_size > 0
    assert "accuracy" in capsys.readouterr().out


def test_predict_writes_the_argmax_of_the_logits_for_every_example(run, tmp_path):
    assert main(["predict", "--run", str(run), "--out", str(tmp_path / "p.npz")]) == 0
    p = np.load(tmp_path / "p.npz")
    assert np.array_equal(p["index"], np.arange(1797))
    model, info = load_model(run)
    task = task_of(info)
    x, y, idx = next(split_batches(task, "all"))
    with torch.no_grad():
        logits = unroll(model, x)[0][-1]
    assert np.array_equal(p["pred"][: len(idx)], logits.argmax(-1).numpy())
    assert np.array_equal(p["target"][: len(idx)], y[-1].numpy())
    assert main(["predict", "--run", str(run), "--out", str(tmp_path / "p.csv")]) == 0
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "index,predicted,target" and len(rows) == 1798


def test_regression_data_from_another_file_has_no_confusion(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5, 2)).astype(np.float32)
    np.savez(tmp_path / "reg.npz", x=x, y=np.cumsum(x, 1)[..., :1])
    out = tmp_path / "r"
    assert main(["train", "--data", str(tmp_path / "reg.npz"), "--epochs", "1", "--hidden", "4",
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    model, info = load_model(out / "model.pt")
    report = evaluate_model(model, task_of(info), "all")
    assert "confusion" not in report and report["examples"] == 16
    p = predict(model, task_of(info), "all")
    assert p.arrays["outputs"].shape == (16, 5, 1)


def test_a_training_checkpoint_is_not_a_model_file(run):
    with pytest.raises(ValueError, match=r"model\.pt"):
        load_model(run / "checkpoint.pt")
    with pytest.raises(FileNotFoundError, match="run directory"):
        load_model(run / "nowhere")


def test_evaluation_of_a_spike_encoded_task_sees_the_trainers_validation_spikes():
    from chronograd.models import build_model
    from chronograd.rules import BPTT
    from chronograd.tasks import get
    from chronograd.training import Trainer

    torch.manual_seed(0)
    task = get("digits", encoding="spikes", steps=5, batch_size=128)
    model = build_model("lif", task.input_size, task.output_size, 8)
    trainer = Trainer(
        model, BPTT(), task.objective, metrics={"accuracy": task.metric}, progress=False
    )
    expected = trainer.evaluate(task.val)
    report = evaluate_model(model, task)
    assert report["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert report["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-9)
