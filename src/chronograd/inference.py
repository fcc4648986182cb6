"""Running a trained model on data: ``evaluate`` and ``predict``, from Python and the CLI.

``chronograd train`` writes ``model.pt`` into its run directory: one file holding the model's
construction (``cell``, sizes, hints of :func:`chronograd.models.build_model`), its weights and
the data it was trained on, loadable with ``torch.load(path, weights_only=True)`` (plain
containers and tensors only; nothing is executed on loading)::

    model, info = load_model("runs/default")          # or runs/default/model.pt
    task = task_of(info)                               # the training task, or datasets.load(...)
    report = evaluate_model(model, task)               # loss, metric, per-class accuracy
    out = predict(model, task, split="all")            # predictions per example

For classification (integer targets) the predicted class of an example is the arg-max of the
logits averaged over the steps the objective reads (its last ``last`` steps, else all):
``ŷ_b = argmax_c (1/L) Σ_{t > T-L} o_{t,b,c}``, the rule of the task's accuracy metric. The
confusion matrix counts ``C[y, ŷ]`` (rows: true class); per-class accuracy is
``C[c, c] / Σ_k C[c, k]``.

Command line::

    chronograd evaluate --run runs/default [--data PATH --format F] [--split val|train|all]
    chronograd predict  --run runs/default --data PATH [--format F] --out predictions.npz
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from chronograd.sequence import unroll
from chronograd.subcommands import command, parse_options
from chronograd.tasks.base import Task
from chronograd.tasks.seeding import derive_seed
from chronograd.training import checkpoint as ckpt

MODEL_FILE = "model.pt"
SPLITS = ("val", "train", "all")


def save_model(
    path: str | Path,
    model: nn.Module,
    spec: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights with its construction ``spec`` (the arguments of
    :func:`~chronograd.models.build_model`: ``cell``, ``input_size``, ``output_size``,
    ``hidden``, ``hints``) and the ``data`` it was trained on (``task``/``data``/``format``/
    ``task_opts``/``seed``) to one ``weights_only``-loadable file."""
    missing = {"cell", "input_size", "output_size", "hidden"} - set(spec)
    if missing:
        raise ValueError(f"the model spec lacks {sorted(missing)}; give the build_model arguments")
    state = {k: v.detach() for k, v in model.state_dict().items()}
    return ckpt.save(
        {
            "kind": "chronograd-model",
            "spec": dict(spec),
            "state_dict": state,
            "data": dict(data or {}),
        },
        path,
    )


def load_model(
    path: str | Path, device: torch.device | str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The model saved by :func:`save_model` (``path``: the file or a run directory) and the
    file's contents without the weights (``spec``, ``data``)."""
    from chronograd.models import build_model

    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no model at {path}; give a run directory written by chronograd train (it holds "
            f"{MODEL_FILE}) or the model file itself"
        )
    saved = ckpt.load(path, map_location=device)
    if not isinstance(saved, dict) or saved.get("kind") != "chronograd-model":
        raise ValueError(
            f"{path} is not a chronograd model file (a checkpoint.pt is a training state; use "
            f"the run's {MODEL_FILE})"
        )
    spec = saved["spec"]
    model = build_model(
        spec["cell"],
        spec["input_size"],
        spec["output_size"],
        spec["hidden"],
        **spec.get("hints", {}),
    )
    model.load_state_dict(saved["state_dict"])
    if device is not None:
        model.to(device)
    model.eval()
    return model, {"spec": spec, "data": saved.get("data", {}), "path": str(path)}


def task_of(
    info: Mapping[str, Any], data: str | None = None, format: str | None = None, **options: Any
) -> Task:
    """The task a saved model was trained on, or the data set ``data`` (``format``) instead."""
    from chronograd import datasets, tasks

    trained = dict(info.get("data", {}))
    opts = {**dict(trained.get("task_opts", {})), **options}
    opts.setdefault("seed", trained.get("seed", 0))
    if data is not None or format is not None:
        return datasets.load(data, format, **{"seed": opts["seed"], **options})
    if trained.get("data") or trained.get("format"):
        return datasets.load(trained.get("data"), trained.get("format"), **opts)
    if not trained.get("task"):
        raise ValueError("the model file names no training data; give the data (--data PATH)")
    return tasks.get(trained["task"], **opts)


def split_batches(task: Task, split: str = "val") -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """``(x (T,B,I), y, index (B,))`` of the examples of ``split``, in order; ``index``: the
    examples' positions in the data set (``-1`` for generated tasks)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if task.data is None:
        source = task.val() if split == "val" else task.train(0)
        for x, y in source:
            yield x, y, torch.full((x.shape[1],), -1, dtype=torch.long)
        return
    d = task.data
    idx = {"val": d.val_idx, "train": d.train_idx, "all": torch.arange(len(d.y))}[split]
    for i, start in enumerate(range(0, len(idx), task.batch_size)):
        part = idx[start : start + task.batch_size]
        # the validation split draws the trainer's spike encodings (ArrayData.batches' seeds)
        g = torch.Generator().manual_seed(
            derive_seed(task.seed, 1 if split == "val" else 2, 0, i, 1)
        )
        x, y = d.get(part, g)
        yield x, y, part


def _readout_steps(task: Task, T: int) -> int:
    return min(T, task.objective.last) if task.objective.last is not None else T


def _is_classification(y: Any) -> bool:
    return isinstance(y, Tensor) and not torch.is_floating_point(y)


@dataclass
class Predictions:
    """Per-example results: ``index``; for classification ``pred``, ``target`` ``(N,)`` and
    ``logits (N, C)``; for sequences ``outputs``, ``targets`` ``(N, T, O)``."""

    index: np.ndarray
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@torch.no_grad()
def predict(
    model: nn.Module, task: Task, split: str = "all", device: torch.device | str | None = None
) -> Predictions:
    """Run ``model`` on the examples of ``split`` of ``task`` (see :func:`split_batches`)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    index, parts = [], {}  # type: ignore[var-annotated]
    for x, y, ix in split_batches(task, split):
        out, _ = unroll(model, x.to(device))
        if not isinstance(out, Tensor):
            raise TypeError("predict handles models with one output tensor; got a dict of outputs")
        index.append(ix.numpy())
        if _is_classification(y):
            logits = out[-_readout_steps(task, out.shape[0]) :].mean(0)  # (B, C)
            got = {"logits": logits, "pred": logits.argmax(-1), "target": y[-1]}
        else:
            got = {"outputs": out.transpose(0, 1), "targets": y.transpose(0, 1)}
        for k, v in got.items():
            parts.setdefault(k, []).append(v.detach().cpu().numpy())
    if not index:
        raise ValueError(f"the {split} split of {task.name} has no examples")
    return Predictions(np.concatenate(index), {k: np.concatenate(v) for k, v in parts.items()})


@torch.no_grad()
def evaluate_model(
    model: nn.Module, task: Task, split: str = "val", device: torch.device | str | None = None
) -> dict[str, Any]:
    """Loss and task metric (example-weighted means over the batches of ``split``); for
    classification also ``per_class_accuracy`` and ``confusion`` (``C[true, predicted]``)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    total, metric, n = 0.0, 0.0, 0
    for x, y, _ in split_batches(task, split):
        x, y = x.to(device), y.to(device)
        out, _ = unroll(model, x)
        b = x.shape[1]
        total += float(task.objective.loss(out, y)) * b
        metric += task.metric(out, y) * b
        n += b
    report: dict[str, Any] = {
        "task": task.name, "split": split, "examples": n, "loss": total / n,
        task.metric.name: metric / n, "chance": task.metric.chance,
    }  # fmt: skip
    p = predict(model, task, split, device)
    if "pred" in p.arrays:
        C = task.output_size
        conf = np.zeros((C, C), dtype=np.int64)
        np.add.at(conf, (p.arrays["target"], p.arrays["pred"]), 1)
        rows = conf.sum(1)
        report["confusion"] = conf.tolist()
        report["per_class_accuracy"] = {
            str(c): float(conf[c, c] / rows[c]) for c in range(C) if rows[c] > 0
        }
    return report


def write_predictions(p: Predictions, path: str | Path) -> Path:
    """``.npz`` (every array) or ``.csv`` (classification: index, predicted, target)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        if "pred" not in p.arrays:
            raise ValueError("CSV output holds class predictions; write sequences to a .npz file")
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", "predicted", "target"])
            for row in zip(p.index, p.arrays["pred"], p.arrays["target"]):
                w.writerow([int(v) for v in row])
        return path
    if path.suffix != ".npz":
        raise ValueError(f"--out must end in .npz or .csv, got {path.name}")
    np.savez(path, index=p.index, **p.arrays)  # type: ignore[arg-type]
    return path


# -- command line -------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run",
        required=True,
        metavar="DIR",
        help="run directory of chronograd train (or its model.pt)",
    )
    p.add_argument(
        "--data", default=None, metavar="PATH", help="data to run on (default: the training data)"
    )
    p.add_argument("--format", default=None, help="format of --data (default: from its name)")
    p.add_argument(
        "--task-opt", action="append", default=[], metavar="KEY=VALUE", help="data option"
    )
    p.add_argument("--device", default="cpu", help="where the model runs")


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--split", default="val", choices=SPLITS, help="which examples of the data")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="where evaluation.json and confusion.png go (default: the run directory)",
    )


def _predict_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--split", default="all", choices=SPLITS, help="which examples of the data")
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="predictions: .npz (all arrays) or .csv (classes)",
    )


@command("evaluate", _evaluate_args)
def evaluate_command(args: argparse.Namespace) -> int:
    """Loss, metric, per-class accuracy and a confusion matrix of a trained model."""
    from chronograd.plotting import confusion_matrix

    model, info = load_model(args.run, args.device)
    task = task_of(info, args.data, args.format, **parse_options(args.task_opt))
    report = evaluate_model(model, task, args.split, args.device)
    run = Path(args.run)
    out = Path(args.out) if args.out else (run if run.is_dir() else run.parent)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    m = task.metric.name
    print(
        f"{task.name} ({args.split}, {report['examples']} examples): loss {report['loss']:.4f}, "
        f"{m} {report[m]:.4f} (chance {report['chance']:.4f})"
    )
    if "confusion" in report:
        confusion_matrix(np.asarray(report["confusion"]), out / "confusion.png", title=task.name)
        worst = sorted(report["per_class_accuracy"].items(), key=lambda kv: kv[1])[:3]
        print("lowest per-class accuracy: " + ", ".join(f"class {c} {a:.3f}" for c, a in worst))
        print(f"Outputs in {out}/: evaluation.json, confusion.png")
    else:
        print(f"Outputs in {out}/: evaluation.json")
    return 0


@command("predict", _predict_args)
def predict_command(args: argparse.Namespace) -> int:
    """Predictions of a trained model for every example of the data, written to a file."""
    model, info = load_model(args.run, args.device)
    task = task_of(info, args.data, args.format, **parse_options(args.task_opt))
    p = predict(model, task, args.split, args.device)
    path = write_predictions(p, args.out)
    print(f"{len(p.index)} predictions of {task.name} ({args.split}) written to {path}")
    return 0
