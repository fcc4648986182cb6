"""User data sets from .npz files: loading, the split, and the table of input errors."""

import json

import numpy as np
import pytest
import torch

import chronograd as cg
from chronograd.cli import main


def save(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def labelled(N=40, T=6, I=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, T, I)).astype(np.float32)
    return x, (x[:, :, 0].sum(1) > 0).astype(np.int64)  # a label the sequence determines


def test_classification_file_round_trip_and_split(tmp_path):
    x, y = labelled()
    task = cg.tasks.from_npz(save(tmp_path, x=x, y=y), batch_size=8)
    assert (task.name, task.seq_len, task.input_size, task.output_size) == ("npz:data", 6, 3, 2)
    data = task.data
    assert len(data.val_idx) == 8 and len(data.train_idx) == 32
    assert not set(data.val_idx.tolist()) & set(data.train_idx.tolist())
    xs, ys = next(task.val())
    i = int(data.val_idx[0])
    assert torch.allclose(xs[:, 0], torch.from_numpy(x[i])) and (ys[:, 0] == int(y[i])).all()
    assert task.metric.chance == pytest.approx(np.bincount(y[data.val_idx.numpy()]).max() / 8)
    assert sum(b[0].shape[1] for b in task.train(0)) == 32  # one epoch visits each example once
    again = cg.tasks.from_npz(tmp_path / "data.npz", batch_size=8)
    assert torch.equal(next(again.train(2))[0], next(task.train(2))[0])


def test_regression_file_uses_mse_and_normalised_mse(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 5, 2))
    y = np.cumsum(x[..., :1], axis=1)  # (N, T, 1)
    task = cg.tasks.from_npz(save(tmp_path, x=x, y=y), val_fraction=0.3)
    _xs, ys = next(task.val())
    assert ys.shape == (5, 9, 1) and task.output_size == 1
    train = torch.as_tensor(y)[task.data.train_idx].reshape(-1)
    mean = torch.full_like(ys, float(train.mean()))
    assert task.metric(mean, ys) == pytest.approx(task.metric.chance, rel=1e-5)
    assert task.metric(ys, ys) == 0.0


GOOD_X = np.zeros((4, 3, 2), np.float32)
GOOD_Y = np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    ("arrays", "error", "phrase"),
    [
        ({"x": np.zeros((4, 3)), "y": GOOD_Y}, ValueError, r"shape \(N, T, I\).*x\[\.\.\., None\]"),
        ({"x": np.zeros((4, 3, 2, 1)), "y": GOOD_Y}, ValueError, r"shape \(N, T, I\)"),
        ({"x": np.zeros((0, 3, 2)), "y": np.zeros(0, int)}, ValueError, "empty"),
        ({"x": np.array([[["a"]]]), "y": np.array([0])}, TypeError, "real numbers.*astype"),
        ({"x": GOOD_X.astype(complex), "y": GOOD_Y}, TypeError, "real numbers"),
        ({"x": np.full((4, 3, 2), np.nan), "y": GOOD_Y}, ValueError, "NaN or inf.*index"),
        ({"x": GOOD_X, "y": np.array([0.0, 1, 0, 1])}, TypeError, r"integers.*astype\(np.int64\)"),
        ({"x": GOOD_X, "y": np.array([0, 1, 0])}, ValueError, "N=4 sequences but y holds 3"),
        ({"x": GOOD_X, "y": np.array([0, -1, 0, 1])}, ValueError, ">= 0"),
        ({"x": GOOD_X, "y": np.zeros(4, int)}, ValueError, "single class"),
        ({"x": GOOD_X, "y": np.zeros((4, 3))}, ValueError, r"y\[\.\.\., None\]"),
        ({"x": GOOD_X, "y": np.zeros((4, 2, 1))}, ValueError, r"\(N, T, O\) = \(4, 3"),
        ({"x": GOOD_X, "y": np.full((4, 3, 1), np.inf)}, ValueError, "NaN or inf"),
        ({"x": GOOD_X}, ValueError, "no 'y'"),
        ({"inputs": GOOD_X, "y": GOOD_Y}, ValueError, "no 'x'"),
    ],
)
def test_bad_files_raise_saying_what_was_expected(tmp_path, arrays, error, phrase):
    with pytest.raises(error, match=phrase):
        cg.tasks.from_npz(save(tmp_path, **arrays))


def test_unreadable_files_and_pickled_objects_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"numpy\.savez"):
        cg.tasks.from_npz(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match=r"not a readable \.npz"):
        cg.tasks.from_npz(tmp_path / "junk.npz")
    np.save(tmp_path / "one.npy", GOOD_X)
    with pytest.raises(ValueError, match="single array"):
        cg.tasks.from_npz(tmp_path / "one.npy")
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((3, 2)), np.zeros((4, 2))
    with pytest.raises(TypeError, match="Python objects"):  # loaded with allow_pickle=False
        cg.tasks.from_npz(save(tmp_path, x=ragged, y=np.array([0, 1])))


def test_cli_trains_on_a_data_file(tmp_path, capsys):
    x, y = labelled(N=60)
    path = save(tmp_path, x=x, y=y)
    out = tmp_path / "run"
    code = main(["train", "--data", str(path), "--epochs", "2", "--hidden", "8", "--quiet",
                 "--task-opt", "batch_size=16", "--out", str(out)])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["task"] == "npz:data" and summary["metric"] == "accuracy"
    bad = save(tmp_path, "bad.npz", x=x[:, :, 0], y=y)
    assert main(["train", "--data", str(bad), "--quiet", "--out", str(out)]) == 2
    assert "x must have shape (N, T, I)" in capsys.readouterr().err
