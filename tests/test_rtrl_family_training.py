"""The new RTRL-family rules through the shared interface: trainer, checkpoints, CLI."""

import pytest
import torch

import chronograd as cg
from chronograd.cells import LeakyReadout, LeakyRNN, Stack
from chronograd.cli import main
from chronograd.rules import DRTRL, KFRTRL, UORO, PPProp, SnAp
from chronograd.training import Trainer

D = torch.float64


def batches():
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(3, 10, 8, 2, generator=g, dtype=D)
    return [(x, torch.tanh(x[..., :1] - 0.5 * x[..., 1:])) for x in xs]


@pytest.mark.parametrize(
    "rule",
    [
        DRTRL(mode="multi-step", window=3, chunk_size=6),
        PPProp(mode="multi-step", window=2),
        SnAp(n=1, chunk_size=5),
        UORO(seed=0, samples=8, chunk_size=5),
        KFRTRL(seed=0, samples=8, chunk_size=5),
    ],
    ids=["drtrl-multi", "pp-prop-multi", "snap", "uoro", "kf-rtrl"],
)
def test_trainer_trains_with_each_new_rule(rule):
    torch.manual_seed(0)
    model = Stack(LeakyRNN(2, 6, alpha=0.5), LeakyReadout(6, 1)).double()
    data = batches()
    trainer = Trainer(model, rule, cg.Objective("mse"), lr=3e-2, progress=False)
    history = trainer.fit(lambda epoch: data, epochs=6)
    losses = [r["loss"] for r in history.records]
    assert losses[-1] < 0.8 * losses[0], losses


def test_trainer_checkpoint_restores_the_noise_generator(tmp_path):
    def fresh():
        torch.manual_seed(0)
        model = Stack(LeakyRNN(2, 4, alpha=0.5), LeakyReadout(4, 1)).double()
        return model, Trainer(model, UORO(seed=4), cg.Objective("mse"), lr=1e-2, progress=False)

    data = batches()
    model, trainer = fresh()
    trainer.fit(lambda epoch: data, epochs=1)
    path = trainer.save_checkpoint(tmp_path / "ckpt.pt")
    trainer.fit(lambda epoch: data, epochs=2)
    want = {n: p.detach().clone() for n, p in model.named_parameters()}
    model2, trainer2 = fresh()
    trainer2.resume(path)
    trainer2.fit(lambda epoch: data, epochs=2)
    for n, p in model2.named_parameters():
        torch.testing.assert_close(p.detach(), want[n], rtol=0, atol=0)


@pytest.mark.parametrize("rule", ["snap", "uoro", "kf-rtrl"])
def test_cli_trains_with_the_new_rules(rule, tmp_path):
    argv = ["train", "--task", "copy", "--rule", rule, "--cell", "rnn", "--hidden", "4",
            "--epochs", "1", "--chunk", "3", "--quiet", "--out", str(tmp_path),
            "--task-opt", "length=2", "--task-opt", "batches_per_epoch=2",
            "--task-opt", "batch_size=4", "--task-opt", "val_batches=1"]  # fmt: skip
    assert main(argv) == 0


@pytest.mark.gpu
def test_new_rules_on_cuda_match_the_cpu():
    """The noise is drawn on the CPU: a seed gives the same estimate on every device."""
    torch.manual_seed(0)
    model = Stack(LeakyRNN(2, 5, alpha=0.3), LeakyReadout(5, 1)).double()
    x, y = batches()[0]
    obj = cg.Objective("mse")
    for rule in (DRTRL(mode="multi-step", window=3), SnAp(n=1), UORO(seed=1), KFRTRL(seed=1)):
        cpu = cg.gradient(rule, model, x, y, obj)
        gpu = cg.gradient(rule, model.to("cuda"), x.cuda(), y.cuda(), obj)
        model.to("cpu")
        for n in cpu:
            torch.testing.assert_close(gpu[n].cpu(), cpu[n], rtol=1e-9, atol=1e-12)
