"""Worker for the distributed tests: ``python -m tests.dist_worker RULES_JSON OUT_DIR MODE``.

Launched twice with RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT set. For each
``[rule_name, options]`` in RULES_JSON, each rank trains one epoch on its half of a fixed
batch (``shard=False``: the data is already per rank) and rank 0 writes the parameters to
OUT_DIR/<index>.pt. ``MODE=fail`` makes rank 1 raise at its first batch, ``MODE=kill`` kills
it with SIGKILL there.
"""

import json
import os
import signal
import sys

import torch

import chronograd as cg
from chronograd.training import Event, Trainer


def problem(B: int = 4, T: int = 12):
    torch.manual_seed(0)
    model = cg.Stack(
        cg.cells.LIF(3, 6, tau_mem=4.0), cg.cells.LeakyReadout(6, 2, kappa=0.0)
    ).double()
    g = torch.Generator().manual_seed(1)
    xs = torch.rand(T, B, 3, generator=g, dtype=torch.float64) * 3
    ys = torch.randn(T, B, 2, generator=g, dtype=torch.float64)
    return model, xs, ys


def make_trainer(model, rule_name: str, opts: dict, rank: int = 0, **kw):
    # an option given as "<rank>" takes this process's rank: each rank starts with its own
    # value, and the result must still be rank 0's (what the trainer broadcasts)
    opts = {k: rank if v == "<rank>" else v for k, v in opts.items()}
    rule = cg.rules.get(rule_name, **opts)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return Trainer(model, rule, cg.Objective("mse"), optimizer=opt, **kw)


def main(rules: str, out: str, mode: str) -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    for i, (rule_name, opts) in enumerate(json.loads(rules)):
        model, xs, ys = problem()
        half = xs.shape[1] // world
        mine = (xs[:, rank * half : (rank + 1) * half], ys[:, rank * half : (rank + 1) * half])
        trainer = make_trainer(model, rule_name, opts, rank, distributed=True, shard=False)
        if mode == "fail" and rank == 1:

            def fail(t):
                raise ValueError("rank 1 failed on purpose")

            trainer.add_handler(Event.BATCH_STARTED, fail)
        if mode == "kill" and rank == 1:
            trainer.add_handler(Event.BATCH_STARTED, lambda t: os.kill(os.getpid(), signal.SIGKILL))
        trainer.fit([mine], epochs=1)
        if rank == 0:
            torch.save(model.state_dict(), os.path.join(out, f"{i}.pt"))
            carry = trainer.state_dict()["rule"]
            torch.save(carry, os.path.join(out, f"{i}.carry.pt"))  # persistent rule state


if __name__ == "__main__":
    main(*sys.argv[1:4])
