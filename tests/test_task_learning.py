"""A small BPTT-trained network beats each task's trivial baseline on its fast variant.

Each run is seeded and short (well under 10 s on 2 cores); the margins leave room for the
noise of a small validation set, and a network that learnt nothing sits at the chance value.
"""

import numpy as np
import pytest
import torch

import chronograd as cg
from chronograd.models import build_model
from chronograd.training import Trainer


@pytest.fixture(autouse=True)
def _one_thread():
    """Small networks run fastest on one thread (and far faster on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fit(task, cell, hidden, lr, epochs):
    torch.manual_seed(0)
    hints = {k: v for k, v in task.suggested.items() if k not in ("cell", "hidden", "lr")}
    model = build_model(cell, task.input_size, task.output_size, hidden, **hints)
    trainer = Trainer(model, cg.BPTT(), task.objective, lr=lr, metrics={"m": task.metric})
    task.attach(trainer)
    return trainer.fit(task.train, epochs, val=task.val).last("val_m")


SMALL_BATCHES = {"batch_size": 32, "batches_per_epoch": 10, "val_batches": 4}

CASES = {
    # name: (task options, (cell, hidden, lr, epochs), required score)
    "evidence": ({"time_scale": 0.05, **SMALL_BATCHES}, ("lsnn", 32, 1e-2, 3), 0.35),
    "pattern": (
        {"duration_ms": 500.0, "periods_ms": (500.0, 250.0), "batches_per_epoch": 25},
        ("lif", 32, 1e-2, 3),
        0.6,
    ),
    "store_recall": (
        {"time_scale": 0.05, "n_symbols": 6, "delay": 2.0, **SMALL_BATCHES},
        ("gru", 32, 1e-2, 3),
        0.2,
    ),
    "dms": (
        {"time_scale": 0.02, "delay_ms": 500.0, **SMALL_BATCHES},
        ("gru", 32, 3e-2, 4),
        0.2,
    ),
    "copy": ({"length": 3, "batches_per_epoch": 30}, ("gru", 32, 2e-2, 3), 0.6),
    "adding": ({"seq_len": 10, "batches_per_epoch": 30}, ("gru", 32, 2e-2, 3), 0.08),
    "digits": ({}, ("gru", 32, 1e-2, 1), 0.5),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bptt_beats_the_trivial_baseline(name):
    options, (cell, hidden, lr, epochs), required = CASES[name]
    task = cg.tasks.get(name, **options)
    score = fit(task, cell, hidden, lr, epochs)
    chance = task.metric.chance
    if task.metric.higher_is_better:
        assert score > required > chance, (score, chance)
    else:
        assert score < required < chance, (score, chance)


def test_bptt_learns_a_user_data_set():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12, 2)).astype(np.float32)
    y = (x[:, :, 0].sum(1) > 0).astype(np.int64)  # the sign of a running sum
    task = cg.tasks.from_arrays(x, y, batch_size=32)
    score = fit(task, "gru", 16, 2e-2, 4)
    assert score > 0.8 > task.metric.chance
