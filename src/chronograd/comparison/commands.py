"""The ``compare``, ``bench`` and ``raster`` subcommands (registered by :mod:`chronograd.cli`).

``chronograd compare --task evidence --rules bptt,tbptt --epochs 8 --out runs/compare``
``chronograd bench --cell lif --rules bptt,tbptt --hidden 64,256,1024 --steps 100,1000,10000``
``chronograd raster --run runs/x`` (a run of ``chronograd train``) or
``chronograd raster --task evidence [--checkpoint runs/x/checkpoint.pt]``
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from chronograd.subcommands import (
    check_device,
    check_int,
    check_out_dir,
    check_positive_float,
    parse_options,
)

#: Every rule name of the library; ``--rules`` defaults to all of them (the ones not installed
#: are reported as such).
ALL_RULES = "bptt,tbptt,rtrl,drtrl,pp-prop,eprop,ottt,sltt,fptt,rls,snap,uoro,kf-rtrl"


def _line(name: str, args: argparse.Namespace, flags: dict[str, str]) -> str:
    """The command line that reproduces ``args`` (``flags``: attribute -> option)."""
    parts = ["chronograd", name]
    for attr, flag in flags.items():
        v = getattr(args, attr)
        if v is None or v is False or v == []:
            continue
        if v is True:
            parts.append(flag)
        elif isinstance(v, list):
            for item in v:
                parts += [flag, str(item)]
        else:
            parts += [flag, str(v)]
    return " ".join(shlex.quote(p) for p in parts)


def _none_ran(entries: list[dict[str, Any]], name: str) -> None:
    """Refuse (exit 2) a comparison in which no requested rule ran: its table is empty."""
    if any(e["status"] == "ok" for e in entries):
        return
    from chronograd import rules

    why = "; ".join(f"{e['name']}: {e['reason']}" for e in entries)
    raise ValueError(
        f"no requested rule ran, so the {name} table is empty ({why}); pass rule names from "
        f"{', '.join(sorted(rules.RULES))}, e.g. --rules bptt,tbptt"
    )


# -- compare ------------------------------------------------------------------------------------
COMPARE_FLAGS = {
    "task": "--task", "rules": "--rules", "cell": "--cell", "hidden": "--hidden",
    "epochs": "--epochs", "lr": "--lr", "seed": "--seed", "batches": "--batches",
    "batch_size": "--batch-size", "align_batch": "--align-batch", "device": "--device",
    "rule_opt": "--rule-opt", "task_opt": "--task-opt", "no_memory": "--no-memory",
    "max_seconds": "--max-seconds", "raster": "--raster", "out": "--out",
}  # fmt: skip


def compare_args(p: argparse.ArgumentParser) -> None:
    """Add the options of ``chronograd compare`` to the parser ``p``."""
    p.add_argument("--task", default="evidence", help="task name (see: chronograd tasks)")
    p.add_argument("--rules", default=ALL_RULES, help=f"comma-separated (default: {ALL_RULES})")
    p.add_argument("--cell", default=None, help="rnn, gru, lif, alif, lsnn (default: the task's)")
    p.add_argument("--hidden", type=int, default=None, help="hidden units (default: the task's)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=None, help="Adam's learning rate (default: task's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", type=int, default=None, help="training batches per epoch")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per batch")
    p.add_argument("--align-batch", type=int, default=32, help="sequences for the alignment")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--rule-opt", action="append", default=[], metavar="RULE.KEY=VALUE",
        help="an option of one rule, e.g. tbptt.chunk_size=50 (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--task-opt", action="append", default=[], metavar="KEY=VALUE", help="task option"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument(
        "--max-seconds", type=float, default=None,
        help="skip a rule whose training is estimated to take longer",
    )  # fmt: skip
    p.add_argument("--raster", action="store_true", help="also plot a raster per rule")
    p.add_argument("--out", default="runs/compare", help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def compare_command(args: argparse.Namespace) -> int:
    """Train several rules on one task side by side and tabulate their results."""
    from chronograd.comparison.common import rule_options
    from chronograd.comparison.report import compare_table as table
    from chronograd.comparison.side_by_side import compare

    for flag in ("hidden", "epochs", "batches", "batch_size", "align_batch"):
        check_int(f"--{flag.replace('_', '-')}", getattr(args, flag))
    check_positive_float("--lr", args.lr)
    check_positive_float("--max-seconds", args.max_seconds)
    check_out_dir("--out", args.out)
    check_device(args.device)
    doc = compare(
        args.task, args.rules, cell=args.cell, hidden=args.hidden, epochs=args.epochs, lr=args.lr,
        seed=args.seed, batches=args.batches, batch_size=args.batch_size,
        align_batch=args.align_batch, device=args.device,
        rule_options=rule_options(parse_options(args.rule_opt)),
        task_options=parse_options(args.task_opt),
        memory=not args.no_memory, max_seconds=args.max_seconds, raster=args.raster, out=args.out,
        command=_line("compare", args, COMPARE_FLAGS),
        log=(lambda _: None) if args.quiet else print,
    )  # fmt: skip
    print(table(doc))
    print(
        f"\nOutputs in {args.out}/: compare.json, compare.csv, compare.md, learning_curves.png, alignment.png"
    )
    _none_ran(doc["rules"], "compare")
    return 0


# -- bench --------------------------------------------------------------------------------------
BENCH_FLAGS = {
    "cell": "--cell", "rules": "--rules", "hidden": "--hidden", "steps": "--steps",
    "at_hidden": "--at-hidden", "at_steps": "--at-steps", "batch": "--batch",
    "inputs": "--inputs", "outputs": "--outputs", "device": "--device", "repeats": "--repeats",
    "seed": "--seed", "no_memory": "--no-memory", "max_seconds": "--max-seconds",
    "max_memory_gb": "--max-memory-gb", "rule_opt": "--rule-opt", "out": "--out",
}  # fmt: skip


def bench_args(p: argparse.ArgumentParser) -> None:
    """Add the options of ``chronograd bench`` to the parser ``p``."""
    p.add_argument("--cell", default="lif", help="rnn, gru, lif, alif, lsnn")
    p.add_argument("--rules", default="bptt,tbptt", help="comma-separated rule names")
    p.add_argument("--hidden", default="64,256,1024", help="the N sweep")
    p.add_argument("--steps", default="100,1000,10000", help="the T sweep")
    p.add_argument("--at-hidden", type=int, default=None, help="N of the T sweep (default: min)")
    p.add_argument("--at-steps", type=int, default=None, help="T of the N sweep (default: min)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--inputs", type=int, default=None, help="input features (default: N)")
    p.add_argument("--outputs", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument(
        "--max-seconds", type=float, default=60.0,
        help="skip a point predicted to take longer than this (default 60)",
    )  # fmt: skip
    p.add_argument(
        "--max-memory-gb", type=float, default=None,
        help="skip a point predicted to need more (default: half the RAM / 80%% of the GPU)",
    )  # fmt: skip
    p.add_argument(
        "--rule-opt", action="append", default=[], metavar="RULE.KEY=VALUE", help="rule option"
    )
    p.add_argument("--out", default="runs/bench", help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def bench_command(args: argparse.Namespace) -> int:
    """Measure time and memory of rules as the sequence length grows."""
    from chronograd.comparison.common import rule_options
    from chronograd.comparison.report import bench_table as table
    from chronograd.comparison.scaling import bench

    for flag in ("at_hidden", "at_steps", "batch", "inputs", "outputs", "repeats"):
        check_int(f"--{flag.replace('_', '-')}", getattr(args, flag))
    check_positive_float("--max-seconds", args.max_seconds)
    check_positive_float("--max-memory-gb", args.max_memory_gb)
    check_out_dir("--out", args.out)
    check_device(args.device)
    cap = None if args.max_memory_gb is None else int(args.max_memory_gb * 2**30)
    doc = bench(
        args.cell, args.rules, hidden=args.hidden, steps=args.steps, at_hidden=args.at_hidden,
        at_steps=args.at_steps, batch=args.batch, inputs=args.inputs, outputs=args.outputs,
        device=args.device, repeats=args.repeats, seed=args.seed, memory=not args.no_memory,
        max_seconds=args.max_seconds, max_memory_bytes=cap,
        rule_options=rule_options(parse_options(args.rule_opt)), out=args.out,
        command=_line("bench", args, BENCH_FLAGS), log=(lambda _: None) if args.quiet else print,
    )  # fmt: skip
    print(table(doc))
    print(f"\nOutputs in {args.out}/: bench.json, bench.md, scaling_T.png, scaling_N.png")
    _none_ran(doc["rules"], "bench")
    return 0


# -- raster -------------------------------------------------------------------------------------
def raster_args(p: argparse.ArgumentParser) -> None:
    """Add the options of ``chronograd raster`` to the parser ``p``."""
    p.add_argument("--run", default=None, help="an output directory of chronograd train")
    p.add_argument("--task", default=None, help="task name (default: the run's, or evidence)")
    p.add_argument("--cell", default=None, help="cell (default: the run's, or the task's)")
    p.add_argument("--hidden", type=int, default=None, help="hidden units (default: as --cell)")
    p.add_argument("--checkpoint", default=None, help="trainer checkpoint with the weights")
    p.add_argument("--seed", type=int, default=0, help="seeds the untrained model and the data")
    p.add_argument(
        "--task-opt", action="append", default=[], metavar="KEY=VALUE", help="task option"
    )
    p.add_argument("--sample", type=int, default=0, help="which validation sequence")
    p.add_argument("--out", default=None, help="PNG path (default: <run>/raster.png or raster.png)")


def raster_command(args: argparse.Namespace) -> int:
    """Plot the spike raster and activity of a model on one batch of a task."""
    from chronograd.activity import record
    from chronograd.comparison.common import make_task, model_for_task
    from chronograd.training import load
    from chronograd.viz import raster

    check_int("--hidden", args.hidden)
    info: dict[str, Any] = {}
    checkpoint = args.checkpoint
    if args.run is not None:
        run = Path(args.run)
        if not (run / "metrics.json").is_file():
            raise FileNotFoundError(
                f"{run} has no metrics.json; pass a `chronograd train --out` directory"
            )
        info = json.loads((run / "metrics.json").read_text())
        checkpoint = checkpoint or str(run / "checkpoint.pt")
    task = make_task(
        args.task or info.get("task", "evidence"),
        seed=args.seed,
        options=parse_options(args.task_opt),
    )
    model = model_for_task(
        task,
        args.cell or info.get("cell"),
        args.hidden if args.hidden is not None else info.get("hidden"),
        args.seed,
    )
    if checkpoint is not None:
        state = load(checkpoint, map_location="cpu")
        model.load_state_dict(state.get("model", state))
    x, y = next(iter(task.val()))
    if not 0 <= args.sample < x.shape[1]:
        raise ValueError(f"--sample must lie in [0, {x.shape[1]}), got {args.sample}")
    x1, y1 = x[:, args.sample : args.sample + 1], y[:, args.sample : args.sample + 1]
    out = Path(args.out) if args.out else (Path(args.run) if args.run else Path(".")) / "raster.png"
    trained = "trained" if checkpoint else "untrained"
    raster(record(model, x1), out, inputs=x1, targets=y1, title=f"{task.name} ({trained})")
    print(f"wrote {out}")
    return 0
