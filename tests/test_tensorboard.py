"""TensorBoard logging from the trainer: the missing-package path and the logging logic."""

import sys

import pytest
import torch

import chronograd as cg
from chronograd.cells import LeakyReadout, LeakyRNN, Stack
from chronograd.training import Trainer
from chronograd.training.tensorboard import TensorBoardLogger


class FakeWriter:
    def __init__(self):
        self.scalars = []
        self.flushes = 0
        self.closed = False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closed = True

    def series(self, tag):
        return [(s, v) for t, v, s in self.scalars if t == tag]


def _data(n=2, T=6, B=3):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(T, B, 2, generator=g), torch.randn(T, B, 1, generator=g)) for _ in range(n)
    ]


def _trainer():
    torch.manual_seed(0)
    model = Stack(LeakyRNN(2, 4), LeakyReadout(4, 1))
    return Trainer(model, cg.TBPTT(chunk_size=2), cg.Objective("mse"), lr=1e-2)


def test_missing_tensorboard_raises_an_import_error_saying_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoardLogger(tmp_path / "tb")


def test_logs_history_per_epoch_and_every_chunk_loss():
    trainer, writer = _trainer(), FakeWriter()
    TensorBoardLogger(writer=writer).attach(trainer)
    history = trainer.fit(_data(), epochs=2, val=_data(1))
    for key in ("loss", "val_loss", "lr", "time"):
        assert writer.series(f"epoch/{key}") == [(1, history[key][0]), (2, history[key][1])]
    # 2 epochs x 2 batches x 3 chunks of k1=2 steps over T=6
    chunks = writer.series("chunk/loss")
    assert [s for s, _ in chunks] == list(range(1, 13))
    assert writer.series("batch/loss")[-1] == (4, trainer.state.batch_loss)
    assert writer.flushes >= 2 and writer.closed


def test_every_and_none_filter_what_is_logged():
    trainer, writer = _trainer(), FakeWriter()
    TensorBoardLogger(writer=writer, chunk_every=4, batch_every=None).attach(trainer)
    trainer.fit(_data(), epochs=1)
    assert [s for s, _ in writer.series("chunk/loss")] == [4]
    assert writer.series("batch/loss") == []


def test_closes_the_writer_when_training_raises():
    trainer, writer = _trainer(), FakeWriter()
    TensorBoardLogger(writer=writer).attach(trainer)
    with pytest.raises(ValueError):
        trainer.fit([(torch.randn(6, 3, 5), torch.randn(6, 3, 1))], epochs=1)  # wrong input size
    assert writer.closed


def test_bad_arguments():
    with pytest.raises(TypeError, match="add_scalar"):
        TensorBoardLogger(writer=object())
    with pytest.raises(ValueError, match="chunk_every"):
        TensorBoardLogger(writer=FakeWriter(), chunk_every=0)
    with pytest.raises(ValueError, match="log_dir"):
        TensorBoardLogger()
