"""chronograd.datasets on small files written here in the real formats (SHD/SSC HDF5,
N-MNIST binary), the binning of events, pixel digits, and ``train --data PATH --format``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import chronograd as cg
from chronograd import datasets
from chronograd.cli import main
from chronograd.datasets import nmnist

h5py = pytest.importorskip("h5py")


def write_shd(path, n=12, classes=3, seed=0):
    """An SHD-format file: spikes/times and spikes/units as ragged (vlen) arrays, labels."""
    rng = np.random.default_rng(seed)
    times, units, labels = [], [], []
    for i in range(n):
        k = int(rng.integers(5, 40))
        times.append(np.sort(rng.uniform(0, 0.2 + 0.05 * (i % 3), k)).astype(np.float32))
        units.append(rng.integers(0, 700, k).astype(np.uint16))
        labels.append(i % classes)
    with h5py.File(path, "w") as f:
        sp = f.create_group("spikes")
        sp.create_dataset(
            "times", data=np.array(times, dtype=object), dtype=h5py.vlen_dtype(np.float32)
        )
        sp.create_dataset(
            "units", data=np.array(units, dtype=object), dtype=h5py.vlen_dtype(np.uint16)
        )
        f.create_dataset("labels", data=np.array(labels, dtype=np.uint16))
    return times, units, labels


def test_bin_events_counts_each_event_in_its_bin():
    t = np.array([0.0, 0.004, 0.011, 0.011, 0.0299, 0.05])
    c = np.array([0, 0, 2, 2, 1, 1])
    f = datasets.bin_events(t, c, 3, dt=0.01, steps=3)
    expected = torch.zeros(3, 3)
    expected[0, 0], expected[1, 2], expected[2, 1] = 2, 2, 1  # the event at 0.05 is past T
    assert torch.equal(f, expected)
    assert torch.equal(
        datasets.bin_events(t, c, 3, dt=0.01, steps=3, spikes=True), (expected > 0).float()
    )
    with pytest.raises(ValueError, match="channels must lie"):
        datasets.bin_events(t, c, 2, dt=0.01, steps=3)
    assert datasets.n_bins(1.0, 0.01) == 100


def test_shd_file_gives_binned_batches(tmp_path):
    times, units, labels = write_shd(tmp_path / "shd_train.h5")
    task = datasets.load(tmp_path / "shd_train.h5", dt=0.01, duration=0.5, batch_size=4)
    assert (task.input_size, task.output_size, task.seq_len) == (700, 20, 50)
    data = task.data
    x, y = data.get(torch.tensor([3, 7]), torch.Generator())
    assert x.shape == (50, 2, 700) and y.shape == (50, 2)
    for b, i in enumerate((3, 7)):
        assert int(x[:, b].sum()) == len(times[i])  # every spike lands in one bin
        first = int(np.floor(times[i][0] / 0.01))
        assert x[first, b, int(units[i][0])] >= 1
        assert int(y[-1, b]) == labels[i]
    batches = list(task.train(1))
    assert sum(xb.shape[1] for xb, _ in batches) == len(data.train_idx)


def test_shd_align_end_puts_the_last_spike_in_the_last_bin(tmp_path):
    times, _, _ = write_shd(tmp_path / "shd_train.h5")
    task = datasets.load(tmp_path / "shd_train.h5", dt=0.01, duration=0.5, align="end")
    x, _ = task.data.get(torch.arange(12), torch.Generator())
    assert bool((x[-1].sum(-1) > 0).all())
    assert [int(x[:, b].sum()) for b in range(12)] == [len(t) for t in times]


def test_shd_test_file_is_the_validation_set_and_ssc_has_35_classes(tmp_path):
    write_shd(tmp_path / "ssc_train.h5", n=10)
    write_shd(tmp_path / "ssc_test.h5", n=6, seed=1)
    task = datasets.load(tmp_path / "ssc_train.h5", test=tmp_path / "ssc_test.h5")
    assert task.output_size == 35 and task.name.startswith("ssc")
    assert len(task.data.train_idx) == 10 and len(task.data.val_idx) == 6


def test_shd_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="downloads nothing"):
        datasets.load(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_dataset("labels", data=np.zeros(3))
    with pytest.raises(ValueError, match="spikes/times"):
        datasets.load(tmp_path / "bad.h5")
    with pytest.raises(ValueError, match="unknown data format"):
        datasets.load(tmp_path / "bad.h5", format="mp3")


def test_nmnist_binary_format_matches_the_published_layout(tmp_path):
    # x=3, y=5, polarity 1, t=0x012345 us: bytes 3, 5, 0x80|0x01, 0x23, 0x45
    nmnist.write_events(tmp_path / "e.bin", [3], [5], [1], [0x012345])
    assert (tmp_path / "e.bin").read_bytes() == bytes([3, 5, 0x81, 0x23, 0x45])
    ev = nmnist.read_events(tmp_path / "e.bin")
    assert (ev["x"][0], ev["y"][0], ev["p"][0], ev["t"][0]) == (3, 5, 1, 0x012345)


def test_nmnist_folder_trains_a_step(tmp_path):
    rng = np.random.default_rng(0)
    for label in range(3):
        (tmp_path / "Train" / str(label)).mkdir(parents=True)
        for j in range(3):
            k = 30
            nmnist.write_events(
                tmp_path / "Train" / str(label) / f"{j:05d}.bin",
                rng.integers(0, 34, k), rng.integers(0, 34, k), rng.integers(0, 2, k),
                np.sort(rng.integers(0, 50_000, k)),
            )  # fmt: skip
    task = datasets.load(
        tmp_path / "Train", dt=10_000.0, duration=50_000.0, spikes=True, batch_size=4
    )
    assert (task.input_size, task.output_size, task.seq_len) == (2312, 10, 5)
    x, _ = next(iter(task.train(1)))
    assert x.shape[0] == 5 and x.shape[2] == 2312 and float(x.max()) <= 1
    model = cg.models.build_model("lif", task.input_size, task.output_size, 8)
    trainer = cg.training.Trainer(model, cg.rules.get("bptt"), task.objective, progress=False)
    hist = trainer.fit(task.train, 1, val=task.val)
    assert np.isfinite(hist.last("val_loss"))


def test_permuted_digits_reorder_pixels_by_one_fixed_permutation():
    pytest.importorskip("sklearn")
    seq = datasets.load(None, "sequential-digits")
    per = datasets.load(None, "permuted-digits", permutation_seed=3)
    assert seq.seq_len == per.seq_len == 64 and seq.input_size == 1
    order = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(per.data.x[:, :, 0], seq.data.x[:, order, 0])
    assert not torch.equal(per.data.x, seq.data.x)


def test_cli_trains_on_an_shd_file_and_npz_still_works(tmp_path, capsys):
    write_shd(tmp_path / "shd_train.h5", n=10)
    out = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "shd_train.h5"), "--format", "shd", "--epochs", "1",
            "--hidden", "8", "--task-opt", "duration=0.3", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["task"].startswith("shd") and summary["epochs"] == 1
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(20, 6, 3)), y=np.arange(20) % 2)
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--epochs", "1", "--hidden", "4",
                 "--out", str(tmp_path / "r2"), "--quiet"]) == 0  # fmt: skip
