"""Worker for the interruption tests: ``python -m tests.resume_worker MODE OUT [K]``.

MODE: ``full`` trains uninterrupted; ``kill K`` SIGKILLs itself when batch K starts (after
batch K-1's checkpoint); ``term K`` sends itself SIGTERM during batch K; ``resume`` continues
from OUT/ck/last.pt. The final weights go to OUT/<mode>.pt.
"""

import os
import signal
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from chronograd import TBPTT, Objective
from chronograd.cells import GRU, LeakyReadout, Stack
from chronograd.training import Checkpoint, Event, Trainer, TrainingInterrupted


def build():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 10, 3, generator=g)  # (N, T, I): batch-first data
    y = x.cumsum(1)[..., :1] * 0.1
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
    model = Stack(GRU(3, 6), LeakyReadout(6, 1))
    trainer = Trainer(model, TBPTT(4), Objective("mse"), lr=1e-2, time_dim=1)
    return trainer, loader


def main(mode: str, out: str, k: int = 0) -> None:
    out_dir = Path(out)
    torch.manual_seed(123)  # the global RNG drives the loader's shuffling
    trainer, loader = build()
    Checkpoint(out_dir / ("ck_full" if mode == "full" else "ck"), every_batches=1, keep=1).attach(
        trainer
    )
    if mode == "kill":
        trainer.add_handler(
            Event.BATCH_STARTED(once=k), lambda t: os.kill(os.getpid(), signal.SIGKILL)
        )
    if mode == "term":
        trainer.add_handler(
            Event.BATCH_STARTED(once=k), lambda t: os.kill(os.getpid(), signal.SIGTERM)
        )
    if mode == "resume":
        trainer.resume(out_dir / "ck" / "last.pt")
    try:
        trainer.fit(loader, epochs=3)
    except TrainingInterrupted:
        sys.exit(143)
    torch.save(trainer.model.state_dict(), out_dir / f"{mode}.pt")
    torch.save(trainer.history.state_dict(), out_dir / f"{mode}_history.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
