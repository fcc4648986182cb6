"""Checkpoints carry a checksum: a truncated or altered file is refused, naming the file, before
anything is unpickled; resuming falls back to the newest intact kept checkpoint and says so;
a file without a checksum loads with a warning."""

import warnings

import pytest
import torch

import chronograd as cg
from chronograd.training import Checkpoint, CorruptCheckpointError, Trainer
from chronograd.training import checkpoint as ckpt

D = torch.float64


def _trainer():
    torch.manual_seed(0)
    model = cg.Stack(cg.cells.LeakyRNN(3, 4), cg.cells.LeakyReadout(4, 2)).double()
    return Trainer(model, cg.BPTT(), cg.Objective("mse"), lr=0.1, progress=False)


def _data():
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(5, 2, 3, generator=g, dtype=D), torch.randn(5, 2, 2, generator=g, dtype=D))
    ]


def _trained(tmp_path, epochs=3):
    t = _trainer()
    Checkpoint(tmp_path / "ck", keep=2).attach(t)
    t.fit(_data(), epochs)
    return t, tmp_path / "ck"


def _never_unpickle(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("torch.load ran on a damaged file")

    monkeypatch.setattr(ckpt.torch, "load", boom)


def test_a_checkpoint_is_still_a_plain_torch_archive_and_loads_verified(tmp_path):
    t, d = _trained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sealed file loads without a warning
        state = ckpt.load(d / "last.pt")
    assert state["trainer"]["epoch"] == 3
    plain = torch.load(d / "last.pt", weights_only=True)  # the seal is a zip comment
    for name, p in t.model.state_dict().items():
        assert torch.equal(plain["model"][name], p)


def test_a_truncated_file_is_refused_naming_it(tmp_path, monkeypatch):
    _, d = _trained(tmp_path)
    data = (d / "last.pt").read_bytes()
    half = tmp_path / "half.pt"
    half.write_bytes(data[: len(data) // 2])
    _never_unpickle(monkeypatch)
    with pytest.raises(
        CorruptCheckpointError, match=r"half\.pt is not a readable checkpoint.*truncated"
    ):
        ckpt.load(half)


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_64_flipped_bytes_are_refused_naming_the_file(tmp_path, monkeypatch, where):
    _, d = _trained(tmp_path)
    data = bytearray((d / "last.pt").read_bytes())
    i = int(len(data) * where)
    data[i : i + 64] = bytes(b ^ 0x5A for b in data[i : i + 64])
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(data))
    _never_unpickle(monkeypatch)
    with pytest.raises(CorruptCheckpointError, match=r"flipped\.pt is not a readable checkpoint"):
        ckpt.load(bad)


def test_a_single_flipped_tensor_byte_is_caught_by_the_checksum(tmp_path):
    _, d = _trained(tmp_path)
    data = bytearray((d / "last.pt").read_bytes())
    # a byte inside a tensor's storage: the archive stays readable, only the checksum sees it
    i = data.find(b"data/0") + 200
    data[i] ^= 1
    bad = tmp_path / "one.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="do not match the checksum"):
        ckpt.load(bad)


def test_resume_falls_back_to_the_newest_kept_checkpoint_and_says_so(tmp_path):
    _, d = _trained(tmp_path)
    last = d / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    t = _trainer()
    with pytest.warns(UserWarning, match=r"last\.pt is not a readable checkpoint.*epoch_00003\.pt"):
        t.resume(last)
    assert t.state.epoch == 3
    # the newest kept file damaged too: the one before it
    e3 = d / "epoch_00003.pt"
    e3.write_bytes(e3.read_bytes()[:100])
    t = _trainer()
    with pytest.warns(UserWarning, match=r"epoch_00002\.pt"):
        t.resume(last)
    assert t.state.epoch == 2
    # the Checkpoint handler resumes its own directory the same way
    t = _trainer()
    with pytest.warns(UserWarning, match=r"resuming from .*epoch_00002\.pt"):
        used = Checkpoint(d).resume(t)
    assert used == d / "epoch_00002.pt" and t.state.epoch == 2


def test_nothing_intact_to_fall_back_to_raises_the_original_error(tmp_path):
    _, d = _trained(tmp_path, epochs=1)
    for p in d.glob("*.pt"):
        p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(CorruptCheckpointError, match=r"last\.pt"):
        _trainer().resume(d / "last.pt")
    assert Checkpoint(tmp_path / "empty").resume(_trainer()) is None


def test_an_old_checkpoint_without_checksum_loads_with_a_warning(tmp_path):
    t, _ = _trained(tmp_path, epochs=1)
    old = tmp_path / "old.pt"
    torch.save(t.state_dict(), old)  # how checkpoints were written before they were sealed
    other = _trainer()
    with pytest.warns(UserWarning, match=r"old\.pt carries no checksum.*Save it again"):
        other.resume(old)
    assert other.state.epoch == 1


def test_cli_resume_from_a_damaged_last_checkpoint_falls_back(tmp_path, capsys):
    from chronograd.cli import main

    base = ["train", "--task-opt", "time_scale=0.05", "--task-opt", "batch_size=4",
            "--task-opt", "batches_per_epoch=1", "--task-opt", "val_batches=1",
            "--hidden", "4", "--quiet", "--out", str(tmp_path)]  # fmt: skip
    assert main([*base, "--epochs", "2"]) == 0
    last = tmp_path / "checkpoint.pt"  # epoch 2; epoch 1's state is checkpoint.prev.pt
    last.write_bytes(last.read_bytes()[:-10])
    with pytest.warns(UserWarning, match=r"resuming from .*checkpoint\.prev\.pt"):
        assert main([*base, "--epochs", "3", "--resume", str(last)]) == 0
    # nothing to fall back to: one line naming the file, exit 2
    lone = tmp_path / "lone.pt"
    lone.write_bytes(b"PK" + bytes(100))
    assert main([*base, "--epochs", "2", "--resume", str(lone)]) == 2
    err = capsys.readouterr().err.strip()
    assert "lone.pt is not a readable checkpoint" in err and "\n" not in err
