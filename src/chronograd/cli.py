"""Command line: ``chronograd train``, ``tasks``, ``compare``, ``bench``, ``raster``.

Errors print one line and exit with status 2: bad options or data, usage errors, damaged
checkpoints, training that diverged (1 for an unexpected failure, and for another rank's
failure under torchrun, named in that line); ``--debug`` shows the traceback. Subcommands are
registered in :mod:`chronograd.subcommands`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from chronograd.datasets import FORMATS
from chronograd.subcommands import (
    COMMANDS,
    Command,
    check_device,
    check_int,
    check_out_dir,
    check_positive_float,
    command,
    parse_options,
)
from chronograd.training.distributed import DistributedFailure, note_failure
from chronograd.training.resume import TrainingInterrupted

__all__ = ["COMMANDS", "Command", "command", "main", "parse_options"]


# -- train --------------------------------------------------------------------------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="evidence", help="task name (see: chronograd tasks)")
    p.add_argument(
        "--data", default=None, metavar="PATH",
        help="train on a data set instead: FILE.npz with x (N, T, I) and y (N,) labels or "
        "(N, T, O), or a file/folder of --format",
    )  # fmt: skip
    p.add_argument(
        "--format", default=None, choices=FORMATS,
        help="format of --data (default: from its name); digit formats need no --data",
    )  # fmt: skip
    p.add_argument("--rule", default="bptt", help="learning rule (bptt, tbptt, ...)")
    p.add_argument("--cell", default=None, help="rnn, gru, lif, alif, lsnn (default: the task's)")
    p.add_argument("--hidden", type=int, default=None, help="hidden units (default: the task's)")
    p.add_argument("--epochs", type=int, default=12, help="epochs to train")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the task's)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="examples per batch (default: the task's)"
    )
    p.add_argument(
        "--optimizer", default="adam", choices=sorted(OPTIMIZERS),
        help="optimizer of the rule's gradients (rules that update weights themselves use none)",
    )  # fmt: skip
    p.add_argument("--val-every", type=int, default=1, metavar="N", help="validate every N epochs")
    p.add_argument(
        "--tensorboard", default=None, metavar="DIR",
        help="also log scalars for TensorBoard to DIR (needs the tensorboard package)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the weights")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    p.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="steps per update (the rule's chunk_size; k1 of TBPTT)",
    )
    p.add_argument(
        "--rule-opt", action="append", default=[], metavar="KEY=VALUE", help="rule option"
    )
    p.add_argument(
        "--task-opt", action="append", default=[], metavar="KEY=VALUE", help="task option"
    )
    p.add_argument("--out", default="runs/default", help="output directory")
    p.add_argument("--resume", default=None, help="checkpoint to continue from")
    p.add_argument(
        "--checkpoint-every-batches", type=int, default=None, metavar="N",
        help="also checkpoint every N batches (resume mid-epoch after a crash)",
    )  # fmt: skip
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _check_train_args(args: argparse.Namespace) -> None:
    """Refuse out-of-range options before anything is built (one line each, exit 2)."""
    check_int("--hidden", args.hidden)
    check_int("--epochs", args.epochs)
    check_int("--chunk", args.chunk)
    check_int("--checkpoint-every-batches", args.checkpoint_every_batches)
    check_int("--seed", args.seed, least=0)
    if args.seed >= 2**63:
        raise ValueError(f"--seed must be below 2**63, got {args.seed}")
    check_positive_float("--lr", args.lr)
    check_out_dir("--out", args.out)
    check_device(args.device)
    if args.resume is not None and not Path(args.resume).is_file():
        raise FileNotFoundError(
            f"--resume {args.resume}: no such checkpoint file; pass a file such as "
            f"{Path(args.out) / 'checkpoint.pt'}"
        )


OPTIMIZERS = {
    "adam": "Adam",
    "adamw": "AdamW",
    "sgd": "SGD",
    "rmsprop": "RMSprop",
}


def _optimizer(name: str, lr: float) -> Any:
    """None for Adam (the trainer's default, also right for rules without an optimizer), else a
    factory ``params -> torch.optim.<name>(params, lr)``."""
    import torch

    if name == "adam":
        return None
    cls = getattr(torch.optim, OPTIMIZERS[name])
    return lambda params: cls(params, lr=lr)


@command("train", _train_args)
def train(args: argparse.Namespace) -> int:
    """Train a model on a task or a data set; write metrics, checkpoint, model and plot."""
    from chronograd import datasets, rules, tasks
    from chronograd.models import build_model
    from chronograd.plotting import learning_curve
    from chronograd.reproducibility import seed_everything
    from chronograd.training import Checkpoint, Event, ProgressBar, TensorBoardLogger, Trainer

    _check_train_args(args)
    seed_everything(args.seed, deterministic=args.deterministic)
    task_opts = parse_options(args.task_opt)
    if args.batch_size is not None:
        task_opts.setdefault("batch_size", args.batch_size)
    if args.data or args.format:
        task = datasets.load(args.data, args.format, seed=args.seed, **task_opts)
    else:
        task = tasks.get(args.task, seed=args.seed, **task_opts)
    hints = dict(task.suggested)
    cell = args.cell or hints.get("cell", "gru")
    hidden = args.hidden if args.hidden is not None else hints.get("hidden", 64)
    lr = args.lr if args.lr is not None else hints.get("lr", 1e-3)
    for k in ("cell", "hidden", "lr"):
        hints.pop(k, None)
    model = build_model(cell, task.input_size, task.output_size, hidden, **hints)
    opts = parse_options(args.rule_opt)
    if args.chunk is not None:
        if "chunk_size" not in rules.options(args.rule):
            raise ValueError(
                f"rule {args.rule!r} has no steps-per-update option (chunk_size) for --chunk"
            )
        opts.setdefault("chunk_size", args.chunk)
    rule = rules.get(args.rule, **opts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(
        model, rule, task.objective, _optimizer(args.optimizer, lr), lr=lr,
        metrics={task.metric.name: task.metric}, device=args.device,
        progress=False if args.quiet else ProgressBar(total=task.batches_per_epoch),
    )  # fmt: skip
    if args.tensorboard:
        TensorBoardLogger(args.tensorboard).attach(trainer)
    task.attach(trainer)  # the copy curriculum; before Checkpoint, which saves its state
    Checkpoint(out, every_batches=args.checkpoint_every_batches, epoch_files=False,
               last="checkpoint.pt").attach(trainer)  # fmt: skip
    spec = {"cell": cell, "hidden": hidden, "hints": hints,
            "input_size": task.input_size, "output_size": task.output_size}  # fmt: skip
    best = BestModel(f"val_{task.metric.name}", task.metric.higher_is_better,
                     lambda: _save_model(out, model, spec, args, task_opts))  # fmt: skip
    trainer.add_handler(Event.EPOCH_COMPLETED, best)
    if args.resume:
        trainer.resume(args.resume)
        best.restore(trainer.history.records)
    t0 = time.perf_counter()
    history = trainer.fit(task.train, args.epochs, val=task.val, val_every=args.val_every)
    seconds = time.perf_counter() - t0
    trainer.save_checkpoint(out / "checkpoint.pt")
    if not trainer.is_main:  # under torchrun, rank 0 writes the outputs and reports
        return 0
    learning_curve(
        history,
        out / "learning_curve.png",
        metric=task.metric.name,
        title=f"{task.name} / {args.rule} / {cell}",
        chance=task.metric.chance,
    )
    final = history.records[-1]
    key = f"val_{task.metric.name}"
    if not best.epoch:  # no validation was recorded: the last weights
        _save_model(out, model, spec, args, task_opts)
    best_record = next((r for r in history.records if r["epoch"] == best.epoch), final)
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
        "best_epoch": best.epoch,
        "best": best_record,
        "history": history.records,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    print(
        f"{task.name} with {args.rule} on {cell}({hidden}): best {key} = {best_record[key]:.4f} "
        f"at epoch {best.epoch} (saved as model.pt; last epoch {final.get(key, float('nan')):.4f}, "
        f"chance {task.metric.chance:.4f}); {len(history)} epochs in {seconds:.0f}s.\n"
        f"Outputs in {out}/: metrics.json, checkpoint.pt (the last state, for --resume), "
        "model.pt, learning_curve.png"
    )
    return 0


class BestModel:
    """An epoch handler calling ``save()`` when ``key`` improves; ``epoch``: the best one."""

    def __init__(self, key: str, higher_is_better: bool, save: Any) -> None:
        self.key, self.sign, self.save = key, 1.0 if higher_is_better else -1.0, save
        self.best, self.epoch = -float("inf"), 0

    def restore(self, records: list[dict[str, float]]) -> None:
        """The best epoch of a resumed run's earlier epochs (their model.pt is on disk)."""
        for r in records:
            if self.key in r and self.sign * r[self.key] > self.best:
                self.best, self.epoch = self.sign * r[self.key], int(r["epoch"])

    def __call__(self, trainer: Any) -> None:
        value = trainer.state.metrics.get(self.key)
        if value is None or not trainer.is_main or not self.sign * value > self.best:
            return
        self.best, self.epoch = self.sign * value, trainer.state.epoch
        self.save()


def _save_model(
    out: Path, model: Any, spec: dict, args: argparse.Namespace, task_opts: dict
) -> None:
    """model.pt: what chronograd evaluate and predict rebuild the model and its data from."""
    from chronograd.inference import save_model

    data = {"task": None if args.data or args.format else args.task, "format": args.format,
            "data": str(Path(args.data).resolve()) if args.data else None,
            "task_opts": task_opts, "seed": args.seed}  # fmt: skip
    save_model(out / "model.pt", model, spec, data)


# -- tasks --------------------------------------------------------------------------------------
def _tasks_args(p: argparse.ArgumentParser) -> None:
    pass


@command("tasks", _tasks_args)
def list_tasks(args: argparse.Namespace) -> int:
    """List the built-in tasks with their sizes and the data formats."""
    from chronograd import tasks

    for name in tasks.available():
        try:
            t = tasks.get(name)
        except ImportError as e:  # an optional dependency (scikit-learn for digits)
            print(f"{name:24s} unavailable: {e}")
            continue
        print(
            f"{name:24s} T={t.seq_len:<6d} in={t.input_size:<4d} out={t.output_size:<3d} {t.description}"
        )
    print(f"{'--data FILE.npz':24s} your own data: x (N, T, I), y (N,) labels or (N, T, O) targets")
    print(f"{'--data PATH --format F':24s} a data set file, F in: {', '.join(FORMATS)}")
    return 0


# -- compare, bench, raster (implemented in chronograd.comparison.commands) ---------------------
def _register_comparison() -> None:
    from chronograd.comparison import commands as c

    command("compare", c.compare_args)(c.compare_command)
    command("bench", c.bench_args)(c.bench_command)
    command("raster", c.raster_args)(c.raster_command)
    import chronograd.inference  # noqa: F401  (registers evaluate and predict)


_register_comparison()


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if not isinstance(e, KeyError) else text.strip("'\"")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown, except where the help already says it or there is no default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if "(default" in text or d is None or d is False or d == [] or d is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action) or text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv``); returns the exit status."""
    parser = _Parser(
        prog="chronograd",
        description="Train recurrent and spiking networks with temporal credit-assignment rules.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (setup, fn) in COMMANDS.items():
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else None
        setup(
            sub.add_parser(name, help=summary, description=summary, formatter_class=HelpFormatter)
        )
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, one line printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        return COMMANDS[args.command][1](args)
    except (ValueError, TypeError, OSError, KeyError, ImportError) as e:
        note_failure(e)  # under torchrun: the other ranks name this one
        if args.debug:
            raise
        print(f"chronograd {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except DistributedFailure as e:
        if args.debug:
            raise
        print(f"chronograd {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(f"chronograd {args.command}: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
