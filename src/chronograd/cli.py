"""Command line: ``chronograd train``, ``chronograd tasks``.

Errors print one line and exit with status 2 (1 for an unexpected failure); ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Command]] = {}


def command(
    name: str, setup: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Command], Command]:
    """Register a subcommand (other modules add theirs the same way)."""

    def deco(fn: Command) -> Command:
        COMMANDS[name] = (setup, fn)
        return fn

    return deco


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["k=3", "name=adam"]`` -> ``{"k": 3, "name": "adam"}`` (Python literals, else strings)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"option {pair!r} must look like key=value")
        k, v = pair.split("=", 1)
        try:
            out[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k.strip()] = v
    return out


# -- train --------------------------------------------------------------------------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="evidence", help="task name (see `chronograd tasks`)")
    p.add_argument("--rule", default="bptt", help="learning rule (bptt, tbptt, ...)")
    p.add_argument("--cell", default=None, help="rnn, gru, lif, alif, lsnn (default: the task's)")
    p.add_argument("--hidden", type=int, default=None, help="hidden units (default: the task's)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the task's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunk", type=int, default=None, help="truncation k1 for chunked rules")
    p.add_argument(
        "--rule-opt", action="append", default=[], metavar="KEY=VALUE", help="rule option"
    )
    p.add_argument(
        "--task-opt", action="append", default=[], metavar="KEY=VALUE", help="task option"
    )
    p.add_argument("--out", default="runs/default", help="output directory")
    p.add_argument("--resume", default=None, help="checkpoint to continue from")
    p.add_argument("--quiet", action="store_true", help="no progress output")


@command("train", _train_args)
def train(args: argparse.Namespace) -> int:
    from chronograd import rules, tasks
    from chronograd.models import build_model
    from chronograd.plotting import learning_curve
    from chronograd.training import Checkpoint, Trainer

    torch.manual_seed(args.seed)
    task = tasks.get(args.task, seed=args.seed, **parse_options(args.task_opt))
    hints = dict(task.suggested)
    cell = args.cell or hints.get("cell", "gru")
    hidden = args.hidden or hints.get("hidden", 64)
    lr = args.lr or hints.get("lr", 1e-3)
    for k in ("cell", "hidden", "lr"):
        hints.pop(k, None)
    model = build_model(cell, task.input_size, task.output_size, hidden, **hints)
    opts = parse_options(args.rule_opt)
    if args.chunk is not None:  # TBPTT calls its chunk k1, the trace rules chunk_size
        factory = rules.RULES.get(args.rule.lower().replace("_", "-"))
        names = (
            {f.name for f in dataclasses.fields(factory)}
            if dataclasses.is_dataclass(factory)
            else set()
        )
        opts.setdefault(
            "chunk_size" if "chunk_size" in names and "k1" not in names else "k1", args.chunk
        )
    rule = rules.get(args.rule, **opts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(
        model, rule, task.objective, lr=lr, metrics={task.metric.name: task.metric},
        device=args.device, progress=not args.quiet,
    )  # fmt: skip
    Checkpoint(out / "checkpoints", keep=1).attach(trainer)
    if args.resume:
        trainer.resume(args.resume)
    t0 = time.perf_counter()
    history = trainer.fit(task.train, args.epochs, val=task.val)
    seconds = time.perf_counter() - t0
    trainer.save_checkpoint(out / "checkpoint.pt")
    learning_curve(
        history,
        out / "learning_curve.png",
        metric=task.metric.name,
        title=f"{task.name} / {args.rule} / {cell}",
    )
    final = history.records[-1]
    key = f"val_{task.metric.name}"
    summary = {
        "task": task.name,
        "rule": args.rule,
        "cell": cell,
        "hidden": hidden,
        "epochs": len(history),
        "seconds": seconds,
        "metric": task.metric.name,
        "higher_is_better": task.metric.higher_is_better,
        "chance": task.metric.chance,
        "final": final,
        "history": history.records,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    print(
        f"{task.name} with {args.rule} on {cell}({hidden}): {key} = {final[key]:.4f} "
        f"(chance {task.metric.chance:.4f}) after {len(history)} epochs in {seconds:.0f}s.\n"
        f"Outputs in {out}/: metrics.json, checkpoint.pt, learning_curve.png"
    )
    return 0


# -- tasks --------------------------------------------------------------------------------------
def _tasks_args(p: argparse.ArgumentParser) -> None:
    pass


@command("tasks", _tasks_args)
def list_tasks(args: argparse.Namespace) -> int:
    from chronograd import tasks

    for name in tasks.available():
        t = tasks.get(name)
        print(
            f"{name:24s} T={t.seq_len:<6d} in={t.input_size:<4d} out={t.output_size:<3d} {t.description}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chronograd", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (setup, _) in COMMANDS.items():
        setup(sub.add_parser(name))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as e:
        if args.debug:
            raise
        print(f"chronograd {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
