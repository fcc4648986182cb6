"""Bad command-line input is refused at the entry point: exit status 2 and one line saying what
was expected, what came and the fix, never a traceback; and the Python cases that went with
them (SLTT-K longer than the sequence, huge values in user data)."""

import json

import numpy as np
import pytest
import torch

import chronograd as cg
from chronograd.cli import main

TINY = ["--task-opt", "time_scale=0.02", "--task-opt", "batch_size=4",
        "--task-opt", "batches_per_epoch=1", "--task-opt", "val_batches=1", "--quiet"]  # fmt: skip


def refused(argv, phrase, capsys):
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert phrase in err, err
    return err


@pytest.mark.parametrize(
    "extra, phrase",
    [
        (["--hidden", "-4"], "--hidden must be an integer >= 1, got -4"),
        (["--hidden", "0"], "--hidden must be an integer >= 1, got 0"),  # was: the default 64
        (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),  # was: the task's lr
        (["--lr", "-0.1"], "--lr must be a finite number > 0"),
        (["--lr", "nan"], "--lr must be a finite number > 0"),
        (["--epochs", "0"], "--epochs must be an integer >= 1"),
        (["--chunk", "0"], "--chunk must be an integer >= 1"),
        (["--seed", "-1"], "--seed must be an integer >= 0"),
        (["--device", "banana"], "--device must name a torch device"),
        (["--device", "tpu"], "--device must"),
        (["--hidden", "abc"], "argument --hidden: invalid int value: 'abc'"),
        (["--resume", "/nonexistent/last.pt"], "no such checkpoint file"),
        (["--task-opt", "nosuch=1"], "nosuch"),
    ],
)
def test_train_refuses_bad_options_in_one_line(tmp_path, capsys, extra, phrase):
    refused(["train", *TINY, "--out", str(tmp_path / "run"), *extra], phrase, capsys)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_cuda_device_this_torch_cannot_use_is_refused(tmp_path, capsys):
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    phrase = "sees none" if n == 0 else f"there are {n} CUDA device(s)"
    refused(["train", *TINY, "--device", f"cuda:{n + 7}", "--out", str(tmp_path)], phrase, capsys)


def test_out_naming_an_existing_file_is_refused(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    refused(["train", *TINY, "--out", str(f)], "is an existing file", capsys)
    assert f.read_text() == "keep me"
    refused(["compare", "--rules", "bptt", "--out", str(f)], "is an existing file", capsys)


def test_zero_and_explicit_values_are_used_not_replaced_by_defaults(tmp_path):
    out = tmp_path / "run"
    assert (
        main(["train", *TINY, "--hidden", "3", "--lr", "0.5", "--epochs", "1", "--out", str(out)])
        == 0
    )
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["hidden"] == 3


def test_compare_with_no_rule_that_runs_exits_2(tmp_path, capsys):
    argv = ["compare", "--task", "evidence", "--task-opt", "time_scale=0.02", "--task-opt",
            "val_batches=1", "--hidden", "4", "--epochs", "1", "--batches", "1",
            "--batch-size", "2", "--align-batch", "2", "--no-memory", "--quiet",
            "--rules", "nosuch", "--out", str(tmp_path)]  # fmt: skip
    err = refused(argv, "no requested rule ran", capsys)
    assert "nosuch: not available" in err and "bptt" in err
    refused([*argv[:-4], "--hidden", "0", "--out", str(tmp_path)], "--hidden must be", capsys)
    refused(["bench", "--batch", "0", "--out", str(tmp_path)], "--batch must be", capsys)


def _npz(tmp_path, x, y, name="data.npz"):
    p = tmp_path / name
    np.savez(p, x=x, y=y)
    return p


def _labelled(N=12, T=4, I=2):
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, T, I)).astype(np.float32), np.arange(N) % 2


def test_data_with_a_task_only_option_says_what_is_wrong(tmp_path, capsys):
    x, y = _labelled()
    p = _npz(tmp_path, x, y)
    err = refused(["train", "--data", str(p), "--task-opt", "time_scale=0.1", "--quiet",
                   "--out", str(tmp_path / "r")], "time_scale do not apply to a data file", capsys)  # fmt: skip
    assert "batch_size" in err and "unexpected keyword" not in err
    with pytest.raises(TypeError, match="do not apply to a data file"):
        cg.tasks.from_npz(p, time_scale=0.1)


def test_huge_values_in_user_data_are_refused_unless_allowed(tmp_path, capsys):
    x, y = _labelled()
    x[3, 1, 0] = 1e30
    p = _npz(tmp_path, x, y)
    err = refused(["train", "--data", str(p), "--quiet", "--epochs", "1", "--hidden", "4",
                   "--out", str(tmp_path / "r")], "above max_abs = 1e+06", capsys)  # fmt: skip
    assert "|x| = 1e+30" in err and "standardise" in err
    with pytest.raises(ValueError, match="above max_abs"):
        cg.tasks.from_npz(p)
    # regression targets too
    xr = np.zeros((6, 3, 1), np.float32)
    yr = np.full((6, 3, 1), 5e7, np.float32)
    with pytest.raises(ValueError, match=r"\|y\| = 5e\+07"):
        cg.tasks.from_arrays(xr, yr)
    with pytest.raises(ValueError, match="max_abs must be a number > 0 or None"):
        cg.tasks.from_arrays(xr, yr, max_abs=-1)
    # allowed on purpose: trains
    assert cg.tasks.from_npz(p, max_abs=None).input_size == 2
    code = main(["train", "--data", str(p), "--task-opt", "max_abs=None", "--quiet", "--epochs",
                 "1", "--hidden", "4", "--out", str(tmp_path / "r")])  # fmt: skip
    assert code == 0


def test_labels_implying_a_huge_number_of_classes_are_refused():
    x, _ = _labelled(N=4)
    with pytest.raises(ValueError, match=r"C <= 100000.*max\(y\) = 10000000.*return_inverse"):
        cg.tasks.from_arrays(x, np.array([0, 1, 2, 10**7]))


def test_sltt_k_longer_than_the_sequence_is_refused():
    torch.manual_seed(0)
    model = cg.Stack(cg.cells.LIF(3, 4), cg.cells.LeakyReadout(4, 2)).double()
    xs, ys = torch.rand(10, 2, 3, dtype=torch.float64), torch.randn(10, 2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"SLTT\(k=1000\).*T=10 steps; use k <= 10"):
        cg.gradient(cg.rules.SLTT(k=1000), model, xs, ys, cg.Objective("mse"))
    grads = cg.gradient(cg.rules.SLTT(k=10), model, xs, ys, cg.Objective("mse"))  # k = T is fine
    assert all(torch.isfinite(g).all() for g in grads.values())


def _rnn():
    torch.manual_seed(0)
    return cg.Stack(cg.cells.LeakyRNN(3, 4), cg.cells.LeakyReadout(4, 2)).double()


@pytest.mark.parametrize(
    "xs, ys, error, phrase",
    [
        (torch.zeros(4, 2, 3, 1), torch.zeros(4, 2, 2), ValueError, r"must have shape \(T, B, 3\)"),
        (
            torch.zeros(4, 2, 3),
            torch.zeros(4, 2, 2, dtype=torch.complex64),
            TypeError,
            "real numbers",
        ),
        (torch.zeros(4, 2, 3), torch.ones(4, 2, 2, dtype=torch.bool), TypeError, r"y\.float\(\)"),
        (torch.zeros(4, 2, 3), torch.full((4, 2, 2), float("nan")), ValueError, "non-finite"),
    ],
)
def test_python_inputs_found_by_the_fuzzer_are_refused(xs, ys, error, phrase):
    xs = xs.double()
    ys = ys.double() if ys.is_floating_point() else ys
    with pytest.raises(error, match=phrase):
        cg.gradient(cg.BPTT(), _rnn(), xs, ys, cg.Objective("mse"))


@pytest.mark.parametrize(
    "batch, error, phrase",
    [
        ((None, None), TypeError, "inputs must be a tensor"),
        ((torch.tensor(1.0), None), ValueError, "must be time first"),
    ],
)
def test_trainer_batches_that_are_not_time_first_tensors_are_refused(batch, error, phrase):
    trainer = cg.training.Trainer(_rnn(), cg.BPTT(), cg.Objective("mse"), progress=False)
    with pytest.raises(error, match=phrase):
        trainer.fit([batch], 1)
