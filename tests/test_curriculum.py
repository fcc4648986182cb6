"""The copy task's length curriculum: its rule, the trainer wiring, checkpoints and resume."""

import itertools

import pytest
import torch

import chronograd as cg
from chronograd.cells import GRU, LeakyReadout, Stack
from chronograd.tasks import Curriculum
from chronograd.training import Trainer


@pytest.fixture(autouse=True)
def _one_thread():
    """Small networks run fastest on one thread (and far faster on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_update_rule_threshold_solved_and_cap():
    c = Curriculum(start=2, max_length=4, threshold=0.15)
    assert (c.length, c.solved) == (2, 0)
    assert not c.update(0.2) and c.length == 2  # above the threshold: stay
    assert not c.update(float("nan")) and c.length == 2
    assert c.update(0.1) and (c.length, c.solved) == (3, 2)
    assert c.update(0.05) and (c.length, c.solved) == (4, 3)
    assert not c.update(0.01) and (c.length, c.solved) == (4, 4)  # capped at max_length
    with pytest.raises(ValueError, match="max_length"):
        Curriculum(start=5, max_length=3)


def test_the_sampler_reads_the_current_length():
    task = cg.tasks.get("copy", curriculum=True, start=2, max_length=9)
    assert task.seq_len == 19 and task.curriculum is not None
    assert next(task.train(1))[0].shape[0] == 5  # 2 bits, stop, 2 outputs
    task.curriculum.update(0.0)
    x, y = next(task.train(1))
    assert x.shape[0] == 7 and task.metric(torch.zeros_like(y), y) == pytest.approx(1.0)


def make(seed=0, **opts):
    torch.manual_seed(seed)
    task = cg.tasks.get("copy", curriculum=True, threshold=0.6, batch_size=16, **opts)
    model = Stack(GRU(3, 24), LeakyReadout(24, 1))
    trainer = Trainer(
        model, cg.BPTT(), task.objective, lr=2e-2, metrics={"bits_per_char": task.metric}
    )
    task.attach(trainer)
    return task, trainer


def test_training_raises_the_length_and_records_it():
    task, trainer = make(batches_per_epoch=15, val_batches=1)
    history = trainer.fit(task.train, epochs=6, val=task.val)
    lengths, solved = history["curriculum_length"], history["longest_solved"]
    assert lengths[0] == 1 and max(lengths) > 1  # learnt L=1, moved on
    assert all(b - a in (0, 1) for a, b in itertools.pairwise(lengths))
    for rec in history.records:  # raised exactly when the epoch's val bpc fell below 0.6
        assert (rec["val_bits_per_char"] < 0.6) == (
            rec["longest_solved"] == rec["curriculum_length"]
        )
    assert task.curriculum.solved == solved[-1] >= 1


def test_checkpoint_and_resume_continue_the_curriculum_exactly(tmp_path):
    opts = {"batches_per_epoch": 12, "val_batches": 1}
    task, trainer = make(**opts)
    full = trainer.fit(task.train, epochs=6, val=task.val)

    task, trainer = make(**opts)
    trainer.fit(task.train, epochs=3, val=task.val)
    trainer.save_checkpoint(tmp_path / "ck.pt")
    saved = cg.training.load(tmp_path / "ck.pt")["extra"]["curriculum"]
    assert saved == task.curriculum.state_dict()

    task2, trainer2 = make(seed=123, **opts)  # fresh objects, other initial weights
    trainer2.resume(tmp_path / "ck.pt")
    assert task2.curriculum.state_dict() == saved
    resumed = trainer2.fit(task2.train, epochs=6, val=task2.val)
    for key in ("curriculum_length", "longest_solved", "val_bits_per_char", "loss"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-5), key


def test_resume_refuses_a_mismatched_registration(tmp_path):
    task, trainer = make(batches_per_epoch=1, val_batches=1)
    trainer.fit(task.train, epochs=1, val=task.val)
    trainer.save_checkpoint(tmp_path / "ck.pt")
    torch.manual_seed(0)
    bare = Trainer(Stack(GRU(3, 24), LeakyReadout(24, 1)), cg.BPTT(), task.objective)
    with pytest.raises(ValueError, match=r"task.attach\(trainer\)"):
        bare.resume(tmp_path / "ck.pt")
    with pytest.raises(ValueError, match="already registered"):
        task.attach(trainer)
    with pytest.raises(TypeError, match="state_dict"):
        trainer.register_state("x", object())


def test_without_the_metric_the_curriculum_says_what_to_add():
    task = cg.tasks.get("copy", curriculum=True, batch_size=4, batches_per_epoch=1)
    trainer = Trainer(Stack(GRU(3, 8), LeakyReadout(8, 1)), cg.BPTT(), task.objective)
    task.attach(trainer)
    with pytest.raises(KeyError, match="metrics="):
        trainer.fit(task.train, epochs=1)


def test_cli_runs_and_resumes_a_curriculum(tmp_path):
    import json

    from chronograd.cli import main

    argv = ["train", "--task", "copy", "--hidden", "16", "--quiet", "--out", str(tmp_path),
            "--task-opt", "curriculum=True", "--task-opt", "threshold=0.9",
            "--task-opt", "batches_per_epoch=10", "--task-opt", "batch_size=16"]  # fmt: skip
    assert main([*argv, "--epochs", "2"]) == 0
    ck = cg.training.load(tmp_path / "checkpoint.pt")
    assert ck["extra"]["curriculum"]["length"] >= 2  # 0.9 bits: solved at once
    resume = ["--resume", str(tmp_path / "checkpoint.pt"), "--epochs", "3"]
    assert main([*argv, *resume]) == 0
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[2]["curriculum_length"] == ck["extra"]["curriculum"]["length"]
