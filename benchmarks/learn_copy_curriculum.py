"""Issue 18 showcase: the copy task with a length curriculum, the longest length each rule
solves within a fixed budget.

The task of KF-RTRL (Mujika et al. 2018) and SnAp (Menick et al. 2021):
``chronograd tasks`` ``copy`` with ``curriculum=True`` (start at L = 1, L += 1 once an epoch's
validation bits per character falls below 0.15). Every rule trains the same tanh RNN
(``build_model("rnn", ...)``: LeakyRNN + linear readout) from the same initial weights on the
same batches, with Adam, one update per sequence, for the same number of updates (the
budget: ``--epochs`` x ``--batches``). Reported: the longest length solved, the length
reached, and the wall time. Small budgets give small lengths; the ranking, not the numbers of
the papers (which train for days), is the point. Usage:
``python benchmarks/learn_copy_curriculum.py [--epochs 20] [--batches 10] [--hidden 16]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import chronograd as cg
from chronograd.models import build_model
from chronograd.training import Trainer

from _common import RESULTS, write

RULES = {  # label: (registry name, options)
    "bptt": ("bptt", {}),
    "rtrl": ("rtrl", {}),
    "snap-1": ("snap", {"n": 1}),
    "snap-2": ("snap", {"n": 2}),
    "drtrl": ("drtrl", {}),
    "drtrl-multi-4": ("drtrl", {"mode": "multi-step", "window": 4}),
    "pp-prop": ("pp-prop", {}),
    "uoro": ("uoro", {"seed": 0}),
    "kf-rtrl": ("kf-rtrl", {"seed": 0}),
}


def run(label: str, args: argparse.Namespace) -> dict:
    name, opts = RULES[label]
    torch.manual_seed(args.seed)
    task = cg.tasks.get(
        "copy", curriculum=True, max_length=args.max_length, batch_size=args.batch_size,
        batches_per_epoch=args.batches, val_batches=1, seed=args.seed,
    )  # fmt: skip
    model = build_model("rnn", task.input_size, task.output_size, args.hidden)
    rule = cg.rules.get(name, **opts)
    trainer = Trainer(model, rule, task.objective, lr=args.lr,
                      metrics={task.metric.name: task.metric}, progress=False)  # fmt: skip
    task.attach(trainer)
    t0 = time.perf_counter()
    history = trainer.fit(task.train, args.epochs, val=task.val)
    last = history.records[-1]
    return {
        "rule": label,
        "options": opts,
        "longest_solved": int(last.get("longest_solved", 0)),
        "length": int(last.get("curriculum_length", 0)),
        "seconds": time.perf_counter() - t0,
        "updates": args.epochs * args.batches,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batches", type=int, default=10, help="updates per epoch")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--max-length", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [run(label, args) for label in args.rules.split(",")]
    lines = [
        f"Budget: {args.epochs} epochs x {args.batches} updates of {args.batch_size} sequences, "
        f"tanh RNN with {args.hidden} units, Adam lr {args.lr}, seed {args.seed}.",
        "",
        "| rule | longest solved L | reached L | seconds |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['rule']} | {r['longest_solved']} | {r['length']} | {r['seconds']:.0f} |"
        for r in rows
    ]
    write("copy_curriculum", "Copy task with curriculum: longest length solved per rule",
          lines, "python benchmarks/learn_copy_curriculum.py " + " ".join(
              f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "rules"))  # fmt: skip
    (RESULTS / "copy_curriculum.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
