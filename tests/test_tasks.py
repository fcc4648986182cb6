"""The task suite: shapes, determinism, the definitions, label balance and trivial baselines."""

import inspect
import itertools
import math
import sys

import pytest
import torch

import chronograd as cg
from chronograd.tasks import store_recall as sr
from chronograd.tasks.metrics import IGNORE

SMALL = {  # fast options for every registered task (shapes and determinism only)
    "adding": {"seq_len": 20},
    "copy": {"length": 5},
    "digits": {},
    "dms": {"time_scale": 0.02, "delay_ms": 500.0},
    "evidence": {"time_scale": 0.05},
    "pattern": {"duration_ms": 500.0, "periods_ms": (500.0, 250.0)},
    "store_recall": {"time_scale": 0.05, "n_symbols": 6, "delay": 2.0},
}


def test_registry_lists_the_suite_and_rejects_unknown_options():
    assert set(cg.tasks.available()) == set(SMALL)
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        cg.tasks.get("nope")
    for name in SMALL:
        with pytest.raises(TypeError, match="unexpected keyword"):
            cg.tasks.get(name, not_an_option=1)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shapes_dtypes_objective_and_metric(name):
    task = cg.tasks.get(name, **SMALL[name])
    x, y = task.batch(3)
    T, B = task.seq_len, 3
    assert x.shape == (T, B, task.input_size) and x.dtype == torch.get_default_dtype()
    assert y.shape[:2] == (T, B)
    if task.spiking:
        assert set(x.unique().tolist()) <= {0.0, 1.0}
    out = torch.randn(T, B, task.output_size)
    loss = task.objective.loss(out, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert math.isfinite(task.metric(out, y))
    assert task.description and "(" in task.description  # names its source
    assert {"cell", "hidden", "lr"} <= set(task.suggested)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_batches_are_lazy_and_deterministic_per_seed_and_epoch(name):
    a, b = cg.tasks.get(name, **SMALL[name]), cg.tasks.get(name, **SMALL[name])
    assert inspect.isgenerator(a.train(1))  # generated (or assembled) one batch at a time
    (xa, ya), (xb, yb) = next(a.train(1)), next(b.train(1))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(next(a.val())[0], next(a.val(5))[0])  # validation is fixed
    if name == "pattern":  # frozen input: identical everywhere, by definition
        assert torch.equal(next(a.train(2))[0], xa)
        return
    x2, y2 = next(a.train(2))
    assert not (torch.equal(x2, xa) and torch.equal(y2, ya))  # a fresh epoch
    x3, y3 = next(cg.tasks.get(name, **SMALL[name], seed=1).train(1))
    assert not (torch.equal(x3, xa) and torch.equal(y3, ya))  # another seed


# -- evidence accumulation ---------------------------------------------------------------------
@pytest.mark.parametrize("time_scale", [1.0, 0.1])
def test_evidence_timing_labels_and_recall_window(time_scale):
    task = cg.tasks.get("evidence", time_scale=time_scale)
    s = time_scale
    T, recall, cue, spacing = round(2250 * s), round(150 * s), round(100 * s), round(150 * s)
    assert task.seq_len == T and task.objective.last == recall
    x, y = task.batch(64 if s < 1 else 16)
    groups = x.reshape(T, x.shape[1], 4, 10).sum(-1)  # (T, B, 4): left, right, recall, noise
    cue_on = torch.zeros(T, dtype=torch.bool)
    sides = []
    for k in range(7):
        t0 = spacing - cue + k * spacing
        cue_on[t0 : t0 + cue] = True
        window = groups[t0 : t0 + cue, :, :2].sum(0)  # (B, 2)
        assert (window.amax(1) > 0).all() and (window.amin(1) == 0).all()  # one side per cue
        sides.append(window.argmax(1))
    assert groups[~cue_on][..., :2].sum() == 0  # cue channels silent outside the cue windows
    assert groups[: T - recall, :, 2].sum() == 0 and groups[T - recall :, :, 2].sum() > 0
    right = torch.stack(sides).sum(0)  # (B,)
    assert torch.equal(y[-1], (right > 3).long()) and (y == y[-1]).all()


def test_evidence_labels_are_balanced():
    y = cg.tasks.get("evidence", time_scale=0.05).batch(2000)[1][-1]
    assert abs(y.float().mean().item() - 0.5) < 0.04


# -- pattern generation ------------------------------------------------------------------------
def test_pattern_is_frozen_and_normalised_and_chance_is_one():
    full = cg.tasks.get("pattern", time_scale=1.0)
    assert full.seq_len == 1000 and full.input_size == 100
    x, y = full.batch(2)
    assert abs(x.mean().item() - 0.05) < 0.005  # 50 Hz at 1 ms
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(y[:, 0], y[:, 1])
    assert y[0].abs().max() == 0 and torch.isclose(y.abs().max(), torch.tensor(1.0))
    task = cg.tasks.get("pattern", outputs=3)
    x, y = task.batch(1)
    assert not torch.equal(x, cg.tasks.get("pattern", outputs=3, seed=1).batch(1)[0])
    mean = y.mean(0, keepdim=True).expand_as(y)
    assert task.metric(mean, y) == pytest.approx(1.0, abs=1e-5) == task.metric.chance
    assert task.metric(y, y) == 0.0


# -- store-recall ------------------------------------------------------------------------------
def test_store_recall_targets_follow_the_store_and_recall_commands():
    task = cg.tasks.get("store_recall", time_scale=0.05)  # 10 steps per period, 12 periods
    x, y = task.batch(200)
    P = 10
    groups = x.reshape(12, P, 200, 4, 25).sum((1, 4))  # (S, B, 4): value 0, value 1, store, recall
    store, recall = groups[..., 2] > 0, groups[..., 3] > 0
    assert not (store & recall).any() and recall.any(0).all()  # >= 1 recall per trial
    shown = groups[..., :2].argmax(-1)  # (S, B): the bit on the value channels
    held = torch.full((200,), -1)
    for k in range(12):
        held = torch.where(store[k], shown[k], held)
        expect = torch.where(recall[k], held, torch.full_like(held, IGNORE))
        assert (y[k * P : (k + 1) * P] == expect).all()
        assert (groups[k, :, :2].sum(-1)[recall[k]] == 0).all()  # no value shown at recall
    bits = y[y != IGNORE].float()
    assert abs(bits.mean().item() - 0.5) < 0.05  # balanced stored bits: chance is 0.5


def test_store_recall_commands_alternate_and_end_with_nothing_stored():
    g = torch.Generator().manual_seed(0)
    c = sr.commands(500, 12, 1 / 7, g)
    for row in c.tolist():
        cmds = [v for v in row if v != sr.NONE]
        assert cmds and cmds[0] == sr.STORE and cmds[-1] == sr.RECALL
        assert all(a != b for a, b in itertools.pairwise(cmds))


def test_store_recall_period_error_of_a_constant_guess_is_chance():
    task = cg.tasks.get("store_recall", time_scale=0.05)
    _x, y = task.batch(400)
    guess = torch.zeros(*y.shape, 2)
    guess[..., 1] = 1.0  # always answer 1
    assert abs(task.metric(guess, y) - task.metric.chance) < 0.05


# -- delayed match-to-sample -------------------------------------------------------------------
def test_dms_timing_delay_and_match_balance():
    s, delay = 0.02, 1000.0
    task = cg.tasks.get("dms", time_scale=s, delay_ms=delay, n_stimuli=3)
    fix, n, d, dec = round(300 * s), round(500 * s), round(delay * s), round(900 * s)
    assert task.seq_len == fix + n + d + n + dec and task.objective.last == dec
    assert cg.tasks.get("dms", time_scale=s, delay_ms=2000.0).seq_len == task.seq_len + d
    x, y = task.batch(1000)
    groups = x.reshape(task.seq_len, 1000, 5, 10).sum(-1)  # 3 stimuli, go, noise
    first = groups[fix : fix + n, :, :3].sum(0).argmax(-1)
    second = groups[fix + n + d : fix + 2 * n + d, :, :3].sum(0).argmax(-1)
    assert groups[fix + n : fix + n + d, :, :3].sum() == 0  # nothing shown during the delay
    assert torch.equal(y[-1], (first == second).long())
    assert groups[:-dec, :, 3].sum() == 0 and (groups[-dec:, :, 3].sum(0) > 0).all()
    assert abs(y[-1].float().mean().item() - 0.5) < 0.05


# -- copy --------------------------------------------------------------------------------------
def test_copy_trial_layout_and_chance_bits_per_char():
    task = cg.tasks.get("copy", length=6)
    x, y = task.batch(50)
    L = 6
    assert task.seq_len == 2 * L + 1
    bits = x[:L, :, 1]
    assert torch.equal(x[:L, :, :2].sum(-1), torch.ones(L, 50))  # one bit per step
    assert (x[L, :, 2] == 1).all() and x[L + 1 :].sum() == 0  # stop token, then blank
    assert torch.equal(y[L + 1 :, :, 0], bits)
    assert task.metric(torch.zeros(task.seq_len, 50, 1), y) == pytest.approx(1.0)
    assert task.metric(100 * (2 * y - 1), y) < 1e-6
    assert task.objective.loss(torch.zeros_like(y), y).item() == pytest.approx(math.log(2))


# -- adding problem ----------------------------------------------------------------------------
def test_adding_problem_markers_target_and_the_trivial_baseline():
    task = cg.tasks.get("adding", seq_len=40)
    x, y = task.batch(20000)
    marks = x[..., 1]
    assert (marks.sum(0) == 2).all()
    assert (marks[:20].sum(0) == 1).all() and (marks[20:].sum(0) == 1).all()
    assert torch.allclose(y[-1, :, 0], (x[..., 0] * marks).sum(0))
    baseline = task.metric(torch.ones_like(y), y)  # always answer 1, the mean of the sum
    assert baseline == pytest.approx(1 / 6, abs=0.005) and task.metric.chance == pytest.approx(
        0.1667, abs=1e-4
    )


# -- sequential digits -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("encoding", "shape"), [("rows", (8, 8)), ("pixels", (64, 1)), ("spikes", (25, 64))]
)
def test_digits_encodings(encoding, shape):
    task = cg.tasks.get("digits", encoding=encoding)
    x, y = next(task.val())
    assert (x.shape[0], x.shape[2]) == shape and y.shape == x.shape[:2]
    assert task.spiking == (encoding == "spikes")
    if encoding == "spikes":  # drawn per batch from the batch's seed
        assert set(x.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(next(task.val())[0], x)
        assert not torch.equal(next(task.train(1))[0], next(task.train(2))[0])
    else:
        assert x.min() >= 0 and x.max() <= 1


def test_digits_split_is_fixed_and_epochs_cover_the_training_set():
    task = cg.tasks.get("digits", batch_size=100)
    data = task.data
    assert data is not None
    train, val = set(data.train_idx.tolist()), set(data.val_idx.tolist())
    assert not train & val and len(train | val) == 1797 and len(val) == round(0.2 * 1797)
    assert torch.equal(cg.tasks.get("digits", seed=5).data.val_idx, data.val_idx)
    labels = torch.cat([y[-1] for _, y in task.train(3)])
    assert len(labels) == len(train) and task.batches_per_epoch == -(-len(train) // 100)
    assert torch.equal(labels.sort().values, data.y[data.train_idx].sort().values)
    val_labels = torch.cat([y[-1] for _, y in task.val()])
    best = max((val_labels == c).float().mean().item() for c in range(10))  # best constant
    assert task.metric.chance == pytest.approx(best)
    assert 0.1 <= task.metric.chance < 0.13  # ten classes of about 180 images each


def test_digits_without_scikit_learn_names_the_extra(monkeypatch):
    from chronograd.tasks import digits

    digits.load.cache_clear()
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'chronograd\[data\]'"):
        cg.tasks.get("digits")
    digits.load.cache_clear()


@pytest.mark.parametrize(
    ("name", "options", "error", "phrase"),
    [
        ("evidence", {"time_scale": 2.0}, ValueError, "time_scale"),
        ("pattern", {"time_scale": 0.0}, ValueError, "time_scale"),
        ("pattern", {"time_scale": 0.05}, ValueError, "carry no timing"),
        ("dms", {"encoding": "morse"}, ValueError, "encoding"),
        ("store_recall", {"n_symbols": 1}, ValueError, "n_symbols"),
        ("dms", {"n_stimuli": 1}, ValueError, "n_stimuli"),
        ("copy", {"length": 0}, ValueError, "length"),
        ("copy", {"curriculum": "yes"}, TypeError, "curriculum"),
        ("adding", {"seq_len": 1}, ValueError, "seq_len"),
        ("digits", {"encoding": "jpeg"}, ValueError, "encoding"),
    ],
)
def test_bad_options_raise_with_the_reason(name, options, error, phrase):
    with pytest.raises(error, match=phrase):
        cg.tasks.get(name, **options)


# -- command line ------------------------------------------------------------------------------
def test_cli_lists_every_task_with_its_sizes(capsys):
    from chronograd.cli import main

    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in SMALL:
        (line,) = [ln for ln in lines if ln.startswith(name + " ")]
        t = cg.tasks.get(name)
        assert f"T={t.seq_len}" in line and f"in={t.input_size}" in line and t.description in line
    assert any("--data" in ln for ln in lines)


CLI_OPTS = {  # tiny runs: one small batch per epoch
    "digits": ["batch_size=600"],
    **{n: ["batch_size=4", "batches_per_epoch=1", "val_batches=1"] for n in SMALL if n != "digits"},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_cli_trains_every_task(name, tmp_path):
    from chronograd.cli import main

    opts = [f"{k}={v}" for k, v in SMALL[name].items()] + CLI_OPTS[name]
    argv = ["train", "--task", name, "--epochs", "1", "--hidden", "8", "--quiet",
            "--out", str(tmp_path)]  # fmt: skip
    for o in opts:
        argv += ["--task-opt", o.replace(" ", "")]
    assert main(argv) == 0
    assert (tmp_path / "checkpoint.pt").exists()
