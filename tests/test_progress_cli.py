"""The progress bar (live on a terminal, one line per epoch otherwise, silenced by
verbose=False), the train flags, help texts, the best-epoch model and one checkpoint per run."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from chronograd.cli import main
from chronograd.models import build_model
from chronograd.rules import BPTT
from chronograd.tasks import from_arrays
from chronograd.training import ProgressBar, Trainer


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def small_task():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6, 3)).astype(np.float32)
    return from_arrays(x, (x[:, :, 0].sum(1) > 0).astype(np.int64), batch_size=16)


def write_npz(path):
    task = small_task()
    np.savez(path, x=task.data.x.numpy(), y=task.data.y.numpy())
    return task


def small_fit(**kwargs):
    torch.manual_seed(0)
    task = small_task()
    model = build_model("gru", task.input_size, task.output_size, 8)
    trainer = Trainer(model, BPTT(), task.objective, metrics={"accuracy": task.metric}, **kwargs)
    return trainer, task


def test_log_output_is_one_line_per_epoch_without_carriage_returns():
    out = io.StringIO()
    trainer, task = small_fit(progress=ProgressBar(out))
    trainer.fit(task.train, 2, val=task.val)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2: ") and "val_accuracy" in lines[1]


def test_terminal_output_redraws_a_bar_with_the_running_loss():
    out = Terminal()
    trainer, task = small_fit(progress=ProgressBar(out, total=task_batches()))
    trainer.fit(task.train, 1)
    text = out.getvalue()
    assert text.count("\r") >= task_batches()
    assert f"] {task_batches()}/{task_batches()} loss " in text and "batch/s" in text
    assert text.endswith("\n")


def task_batches() -> int:
    return small_task().batches_per_epoch


def test_trainer_shows_progress_by_default_on_a_terminal_only(monkeypatch):
    tty = Terminal()
    monkeypatch.setattr("sys.stderr", tty)
    trainer, task = small_fit()
    trainer.fit(task.train, 1)
    assert "epoch 1/1" in tty.getvalue()
    quiet = Terminal()
    monkeypatch.setattr("sys.stderr", quiet)
    trainer, task = small_fit(verbose=False)
    trainer.fit(task.train, 1)
    assert quiet.getvalue() == ""
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    trainer, task = small_fit()
    trainer.fit(task.train, 1)
    assert pipe.getvalue() == ""


def test_val_every_validates_every_nth_and_the_last_epoch():
    trainer, task = small_fit(progress=False)
    history = trainer.fit(task.train, 3, val=task.val, val_every=2)
    assert [("val_loss" in r) for r in history.records] == [False, True, True]
    with pytest.raises(ValueError, match="val_every"):
        trainer.fit(task.train, 4, val=task.val, val_every=0)


def test_help_is_plain_with_defaults_and_one_summary_per_command(capsys):
    assert main(["--help"]) == 0  # main returns the exit status, never raises SystemExit
    top = capsys.readouterr().out
    for name in ("train", "evaluate", "predict", "compare", "bench", "raster", "tasks"):
        line = next(ln for ln in top.splitlines() if ln.strip().startswith(name + " "))
        assert len(line.split()) > 2, line  # the command and its summary
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "`" not in top + text
    assert "(default: 12)" in text and "(default: adam)" in text and "(default: 0)" in text


def test_train_flags_best_model_and_a_single_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    task = write_npz(tmp_path / "d.npz")
    args = ["train", "--data", str(tmp_path / "d.npz"), "--hidden", "8", "--epochs", "3", "--batch-size", "8",
            "--optimizer", "sgd", "--lr", "0.05", "--val-every", "1", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    files = sorted(p.name for p in out.iterdir())
    # the last state, the one before it (the fallback of a damaged checkpoint.pt), the best model
    assert files == [
        "checkpoint.prev.pt", "checkpoint.pt", "learning_curve.png", "metrics.json", "model.pt"
    ]  # fmt: skip
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 3 * -(-len(task.data.train_idx) // 8)  # --batch-size
    assert "momentum" in state["optimizer"]["param_groups"][0]  # SGD, not Adam
    summary = json.loads((out / "metrics.json").read_text())
    accs = [r["val_accuracy"] for r in summary["history"]]
    assert summary["best_epoch"] == 1 + accs.index(max(accs))
    assert summary["best"]["val_accuracy"] == max(accs)
    assert f"at epoch {summary['best_epoch']}" in capsys.readouterr().out
    from chronograd.inference import evaluate_model, load_model, task_of

    model, info = load_model(out)
    report = evaluate_model(model, task_of(info))
    assert report["accuracy"] == pytest.approx(max(accs), abs=1e-6)  # model.pt: the best epoch


def test_tensorboard_flag_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    write_npz(tmp_path / "d.npz")
    args = ["train", "--data", str(tmp_path / "d.npz"), "--hidden", "4", "--epochs", "1", "--quiet",
            "--out", str(tmp_path / "r"), "--tensorboard", str(tmp_path / "tb")]  # fmt: skip
    assert main(args) == 0
    assert any((tmp_path / "tb").iterdir())


def test_learning_curve_has_readable_labels_integer_epochs_and_the_chance_line(
    monkeypatch, tmp_path
):
    import chronograd.plotting as plotting
    from chronograd.training import History

    figures = []
    monkeypatch.setattr(plotting.plt, "close", figures.append)
    h = History()
    for e in range(1, 4):
        h.append(e, loss=1.0 / e, val_loss=1.2 / e, accuracy=0.3 * e, val_accuracy=0.25 * e)
    plotting.learning_curve(h, tmp_path / "lc.png", metric="accuracy", chance=0.25)
    loss_ax, metric_ax = figures[0].axes
    assert (loss_ax.get_ylabel(), metric_ax.get_ylabel()) == ("loss (objective)", "accuracy")
    assert all(float(t).is_integer() for t in metric_ax.get_xticks())
    assert any(list(ln.get_ydata()) == [0.25, 0.25] for ln in metric_ax.get_lines())
    assert (tmp_path / "lc.png").stat().st_size > 0
