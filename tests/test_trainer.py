import json
import os
import pickle

import pytest
import torch

import chronograd as cg
from chronograd import BPTT, TBPTT, Objective
from chronograd.cells import GRU, LeakyReadout, Stack
from chronograd.training import Checkpoint, EarlyStopping, Event, Trainer, UnsafeCheckpointError


def make_model():
    torch.manual_seed(0)
    return Stack(GRU(3, 8), LeakyReadout(8, 1))


def batches(epoch, n=3, T=12, B=4):
    g = torch.Generator().manual_seed(1000 + epoch)
    out = []
    for _ in range(n):
        x = torch.randn(T, B, 3, generator=g)
        out.append((x, x.cumsum(0)[..., :1] * 0.1))
    return out


def test_event_order_with_chunks():
    trainer = Trainer(make_model(), TBPTT(5), Objective("mse"))
    seen = []
    for ev in Event:
        if ev is not Event.EXCEPTION_RAISED:
            trainer.add_handler(ev, lambda t, ev=ev: seen.append(ev.name))
    trainer.fit(lambda e: batches(e, n=1), epochs=1, val=lambda e: batches(99, n=1))
    chunk = ["CHUNK_STARTED", "CHUNK_COMPLETED"]
    assert seen == ["STARTED", "EPOCH_STARTED", "BATCH_STARTED", *chunk * 3, "BATCH_COMPLETED",
                    "VALIDATION_COMPLETED", "EPOCH_COMPLETED", "COMPLETED"]  # fmt: skip


def test_every_and_once_filters():
    trainer = Trainer(make_model(), TBPTT(4), Objective("mse"))
    epochs, batch, chunks = [], [], []
    trainer.add_handler(Event.EPOCH_COMPLETED(every=2), lambda t: epochs.append(t.state.epoch))
    trainer.add_handler(Event.BATCH_COMPLETED(once=4), lambda t: batch.append(t.state.iteration))
    trainer.add_handler(Event.CHUNK_COMPLETED(every=5), lambda t: chunks.append(t.state.chunk))
    trainer.fit(batches, epochs=5)
    assert epochs == [2, 4]
    assert batch == [4]
    assert chunks == [5, 10, 15, 20, 25, 30, 35, 40, 45]  # 5 epochs x 3 batches x 3 chunks
    with pytest.raises(ValueError, match="either every= or once="):
        Event.EPOCH_COMPLETED(every=2, once=3)


def test_decorator_and_handler_arguments():
    trainer = Trainer(make_model(), BPTT(), Objective("mse"))
    got = []

    @trainer.on(Event.EPOCH_COMPLETED, "tag", scale=2)
    def handler(t, tag, scale=1):
        got.append((tag, t.state.epoch * scale))

    trainer.fit(batches, epochs=2)
    assert got == [("tag", 2), ("tag", 4)]


def test_handler_with_wrong_signature_raises_at_registration():
    trainer = Trainer(make_model(), BPTT(), Objective("mse"))
    with pytest.raises(TypeError, match=r"cannot be called as \(trainer, \*args\)"):
        trainer.add_handler(Event.EPOCH_COMPLETED, lambda: None)
    with pytest.raises(TypeError, match="cannot be called"):
        trainer.add_handler(Event.EPOCH_COMPLETED, lambda t, a, b: None, 1)
    with pytest.raises(TypeError, match=r"\(trainer, exception, \*args\)"):
        trainer.add_handler(Event.EXCEPTION_RAISED, lambda t: None)
    trainer.add_handler(Event.EXCEPTION_RAISED, lambda t, e: None)


def test_training_reduces_the_loss_and_records_history():
    trainer = Trainer(
        make_model(),
        BPTT(),
        Objective("mse"),
        lr=1e-2,
        metrics={"mae": lambda o, y: (o - y).abs().mean()},
    )
    hist = trainer.fit(batches, epochs=8, val=lambda e: batches(99))
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert len(hist) == 8 and {"loss", "val_loss", "mae", "val_mae", "lr", "time"} <= set(hist.keys)


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    def run(epochs, resume=None, save=None):
        trainer = Trainer(make_model(), TBPTT(5), Objective("mse"), lr=1e-2,
                          scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 2, 0.5))  # fmt: skip
        if resume:
            trainer.resume(resume)
        trainer.fit(batches, epochs=epochs, val=lambda e: batches(99))
        if save:
            trainer.save_checkpoint(save)
        return trainer

    full = run(5)
    run(2, save=tmp_path / "ck.pt")
    resumed = run(5, resume=tmp_path / "ck.pt")
    for (n, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), n
    assert full.history["loss"] == resumed.history["loss"]
    assert resumed.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]


def test_checkpoint_handler_keeps_last_and_best(tmp_path):
    trainer = Trainer(make_model(), BPTT(), Objective("mse"), lr=1e-2)
    Checkpoint(tmp_path, keep=2, monitor="val_loss").attach(trainer)
    trainer.fit(batches, epochs=4, val=lambda e: batches(99))
    names = sorted(os.listdir(tmp_path))
    assert names == ["best.pt", "epoch_00003.pt", "epoch_00004.pt", "last.pt"]
    state = cg.training.load(tmp_path / "last.pt")
    assert state["trainer"]["epoch"] == 4


def test_crafted_pickle_checkpoint_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "bad.pt"
    with open(bad, "wb") as f:
        pickle.dump({"model": Payload()}, f, protocol=2)
    trainer = Trainer(make_model(), BPTT(), Objective("mse"))
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        trainer.resume(bad)
    assert not marker.exists()


def test_early_stopping_terminates():
    trainer = Trainer(make_model(), BPTT(), Objective("mse"), lr=1e-9)
    stopper = EarlyStopping(monitor="val_loss", patience=2, min_delta=1.0).attach(trainer)
    hist = trainer.fit(batches, epochs=20, val=lambda e: batches(99))
    assert len(hist) == 3 and stopper.bad_epochs == 2


def test_one_shot_iterator_and_bad_arguments_raise():
    trainer = Trainer(make_model(), BPTT(), Objective("mse"))
    with pytest.raises(ValueError, match="one-shot iterator"):
        trainer.fit(iter(batches(0)), epochs=2)
    with pytest.raises(ValueError, match="no batches"):
        Trainer(make_model(), BPTT(), Objective("mse")).fit([], epochs=1)
    with pytest.raises(TypeError, match="must be a chronograd cell"):
        Trainer(torch.nn.Linear(3, 2), BPTT(), Objective("mse"))
    with pytest.raises(TypeError, match="LearningRule"):
        Trainer(make_model(), "bptt", Objective("mse"))
    with pytest.raises(ValueError, match="a pair"):
        Trainer(make_model(), BPTT(), Objective("mse")).fit([(torch.zeros(3, 2, 3),)], epochs=1)


def test_exception_handlers_are_called_then_the_error_propagates():
    trainer = Trainer(make_model(), BPTT(), Objective("mse"))
    seen = []
    trainer.add_handler(Event.EXCEPTION_RAISED, lambda t, e: seen.append(type(e).__name__))
    with pytest.raises(ValueError):
        trainer.fit([(torch.zeros(4, 2, 5), torch.zeros(4, 2, 1))], epochs=1)
    assert seen == ["ValueError"]


def test_cli_train_end_to_end(tmp_path, capsys):
    from chronograd.cli import main

    out = tmp_path / "run"
    code = main(["train", "--task", "evidence", "--rule", "tbptt", "--chunk", "50", "--cell", "lif",
                 "--hidden", "16", "--epochs", "2", "--task-opt", "batches_per_epoch=2",
                 "--task-opt", "batch_size=8", "--task-opt", "val_batches=1", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["epochs"] == 2 and summary["metric"] == "recall_error"
    assert (out / "learning_curve.png").stat().st_size > 1000
    assert cg.training.load(out / "checkpoint.pt")["trainer"]["epoch"] == 2
    assert "val_recall_error" in capsys.readouterr().out


def test_cli_errors_are_one_line(capsys):
    from chronograd.cli import main

    assert main(["train", "--rule", "nope", "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("chronograd train: error: unknown rule 'nope'") and "\n" not in err


@pytest.mark.parametrize(
    "rule", ["tbptt", "fptt", "rls", "rtrl", "drtrl", "pp-prop", "eprop", "ottt", "sltt"]
)
def test_every_chunked_rule_takes_chunk_size(rule):
    assert "chunk_size" in cg.rules.options(rule)
    built = cg.rules.get(rule, chunk_size=7)
    assert built.chunk_size == 7 and built.chunk_length(100) == 7


def test_cli_chunk_on_a_rule_without_steps_per_update_is_refused(capsys):
    from chronograd.cli import main

    assert main(["train", "--rule", "bptt", "--chunk", "4", "--epochs", "1", "--quiet"]) == 2
    assert "no steps-per-update option" in capsys.readouterr().err
