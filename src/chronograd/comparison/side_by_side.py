"""``chronograd compare``: train the same model with several rules and compare them.

Every requested rule trains a copy of one model (same initial weights, seeded per rule) on the
same batches in the same order, with Adam at the same learning rate (rules that return direct
updates, such as RLS, run without an optimizer). For each rule the comparison reports the final
validation metric, the alignment of its gradient with BPTT's on a fixed batch at
initialisation and after training, the median time of a training step and the peak memory of
one training batch. Rules that are not registered, cannot be built with the given options, do
not apply to the model (``check_model``) or fail on first use are skipped with the reason.

Files written to ``out``: ``compare.json`` (below), ``compare.csv`` (one row per rule),
``compare.md`` (the printed table), ``learning_curves.png``, ``alignment.png`` and, with
``raster=True``, ``raster_<rule>.png`` (one validation sequence after training).

JSON schema (``compare.json``; ``null`` wherever a value is undefined or not finite)::

    schema        "chronograd.compare/1"
    command       the command line that reproduces the file
    config        task, task_options, cell, hidden, steps (T), epochs, lr, seed, batch_size,
                  batches (per epoch), val_batches, align_batch, device, rules (as requested),
                  rule_options ({rule: {option: value}}), memory (bool), max_seconds
    machine       cpu, cpu_count, threads, torch, device, gpu
    metric        name, higher_is_better, chance (the task metric)
    timing        how ms_per_step is measured (text)
    memory        how peak_memory_bytes is measured (text)
    rules         one entry per requested rule, in the requested order:
      name              registry name
      status            "ok", "skipped" (see reason) or "failed" (raised during training)
      reason            why it was skipped or failed, else null
      options           the options the rule was built with (defaults + user options)
      chunk             steps per update for this T (null: whole sequence)
      optimizer         "adam", or null for rules that apply direct updates (rules with
                        needs_optimizer = False, or whose first run returns only updates)
      final_metric      validation metric after the last epoch
      best_metric       best validation metric over the epochs
      final_val_loss    validation loss after the last epoch
      final_loss        training loss of the last epoch
      alignment         direction: "gradient" (the rule's summed gradient) or "update" (minus
                        its summed direct update; rel_error is then null, since a step and a
                        gradient have different scales);
                        init / end: {"all": {"cosine", "rel_error"}, "params": {name: {...}}}
                        vs the BPTT gradient of the same model on the alignment batch, before
                        training and after it (cosine 1 and rel_error 0 mean identical); the
                        rule runs with the carry training starts from / ended with, so
                        persistent parts (random feedback, RLS's P) are the trained ones
      ms_per_step       median over training batches of (batch wall time / T), in ms
      seconds           wall time of the whole training run
      peak_memory_bytes peak memory of one training batch, in a fresh process
      memory_error      why the memory measurement failed, else null
      history           per-epoch records (epoch, loss, <metric>, lr, val_loss,
                        val_<metric>, time)
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from chronograd.bench import peak_memory, sync
from chronograd.comparison.common import (
    candidate,
    json_safe,
    machine,
    make_task,
    model_for_task,
    split_names,
)
from chronograd.comparison.report import write_compare
from chronograd.objectives import Objective
from chronograd.rules import BPTT, LearningRule, gradient
from chronograd.testing import Alignment, alignment
from chronograd.training import Event, Trainer
from chronograd.training.apply import run_sequence

TIMING = "median over training batches of the batch's wall time divided by T (ms per time step)"
MEMORY = (
    "peak memory of one training batch (rule and optimizer) in a fresh process "
    "(chronograd.bench.peak_memory: CUDA max_memory_allocated, or the CPU peak resident set "
    "during the call above the one before it)"
)

Log = Callable[[str], None]


def alignments(
    direction: Mapping[str, Tensor], reference: Mapping[str, Tensor], *, update: bool = False
) -> dict[str, Any]:
    """``{"all": {...}, "params": {name: {...}}}`` of ``direction`` vs the BPTT ``reference``.

    Each entry is ``{"cosine", "rel_error"}`` from :func:`chronograd.testing.alignment` (the
    measure of :func:`~chronograd.testing.gradient_alignment`); ``"all"`` concatenates every
    parameter. ``update=True``: ``direction`` is a direct update, compared as ``-update`` (a
    descent step points along ``-g``), without a relative error (a step is not a gradient).
    """
    names = [n for n in direction if n in reference]
    if not names:
        raise ValueError(
            "the rule produced neither a gradient nor an update for any parameter BPTT trains"
        )
    sign = -1.0 if update else 1.0
    per = {n: alignment(sign * direction[n], reference[n]) for n in names}
    every = alignment(
        torch.cat([sign * direction[n].flatten() for n in names]),
        torch.cat([reference[n].flatten() for n in names]),
    )

    def one(a: Alignment) -> dict[str, float | None]:
        return {"cosine": a.cosine, "rel_error": None if update else a.rel_error}

    return {"all": one(every), "params": {n: one(a) for n, a in per.items()}}


def _is_direct(grads: Mapping[str, Tensor], updates: Mapping[str, Tensor] | None) -> bool:
    """The rule applies direct updates and produces no gradient (it needs no optimizer)."""
    return bool(updates) and all(float(g.abs().max()) == 0.0 for g in grads.values())


def _entry(name: str, options: dict[str, Any], status: str, reason: str | None) -> dict[str, Any]:
    """A rule's JSON entry with every field present (``None`` until measured)."""
    return {
        "name": name, "status": status, "reason": reason, "options": options, "chunk": None,
        "optimizer": None, "final_metric": None, "best_metric": None, "final_val_loss": None,
        "final_loss": None, "alignment": None, "ms_per_step": None, "seconds": None,
        "peak_memory_bytes": None, "memory_error": None, "history": [],
    }  # fmt: skip


class _Aligner:
    """Alignment of a rule with BPTT on one fixed batch (reference gradients cached at init).

    The rule runs with a copy of a given carry, so the parts of it that persist across
    sequences (random feedback, RLS's ``P``) are the ones training uses (at init) or produced
    (at the end), not fresh draws.
    """

    def __init__(self, xs: Tensor, ys: Any, objective: Objective) -> None:
        self.xs, self.ys, self.objective = xs, ys, objective
        self.init_refs: dict[tuple[str, ...] | None, dict[str, Tensor]] = {}

    def reference(self, rule: LearningRule, model: nn.Module, cached: bool) -> dict[str, Tensor]:
        if cached and rule.params in self.init_refs:
            return self.init_refs[rule.params]
        ref = gradient(BPTT(params=rule.params), model, self.xs, self.ys, self.objective)
        if cached:
            self.init_refs[rule.params] = ref
        return ref

    def __call__(
        self, rule: LearningRule, model: nn.Module, carry: Any, *, at_init: bool
    ) -> tuple[dict[str, Any], bool, float]:
        """``(alignment entry, rule applies direct updates, seconds of the rule's run)``."""
        start = time.perf_counter()
        res = run_sequence(
            rule, model, self.xs, self.ys, self.objective, carry=copy.deepcopy(carry)
        )
        sync(self.xs.device)
        seconds = time.perf_counter() - start
        direct = not rule.needs_optimizer or _is_direct(res.grads, res.updates)
        ref = self.reference(rule, model, cached=at_init)
        al = alignments((res.updates or {}) if direct else res.grads, ref, update=direct)
        return al, direct, seconds


def compare(
    task: str,
    rules: str | Sequence[str],
    *,
    cell: str | None = None,
    hidden: int | None = None,
    epochs: int = 5,
    lr: float | None = None,
    seed: int = 0,
    batches: int | None = None,
    batch_size: int | None = None,
    align_batch: int = 32,
    device: str = "cpu",
    rule_options: Mapping[str, Mapping[str, Any]] | None = None,
    task_options: Mapping[str, Any] | None = None,
    memory: bool = True,
    max_seconds: float | None = None,
    raster: bool = False,
    out: str | Path | None = None,
    command: str | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Train one model with each rule in ``rules`` and compare them (see the module docstring).

    Args:
        task: task name; ``task_options`` its options.
        rules: registry names (``"bptt,tbptt"`` or a list).
        cell, hidden, lr: the model and learning rate (default: the task's suggestions).
        epochs: training epochs per rule.
        seed: seeds the model's initial weights, the data and each rule's run.
        batches, batch_size: training batches per epoch and their size (default: the task's).
        align_batch: sequences in the batch on which gradients are compared with BPTT.
        device: where to train.
        rule_options: ``{rule: {option: value}}`` on top of :data:`RULE_DEFAULTS`.
        memory: measure peak memory (one fresh process per rule, a few seconds each).
        max_seconds: skip a rule whose training is estimated (from its first batch) to take
            longer than this.
        raster: plot a spike raster of one validation sequence per rule after training.
        out: directory for the JSON, CSV, table and plots (None: write nothing).
        command: the command line recorded in the JSON.
        log: progress messages.

    Returns:
        The JSON document (a dict).
    """
    names = split_names(rules)
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if align_batch < 1:
        raise ValueError(f"align_batch must be >= 1, got {align_batch}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    dev = torch.device(device)
    t = make_task(task, seed=seed, options=task_options, batch_size=batch_size, batches=batches)
    cell_name = cell or t.suggested.get("cell", "gru")
    n_hidden = hidden if hidden is not None else t.suggested.get("hidden", 64)
    rate = lr if lr is not None else t.suggested.get("lr", 1e-3)
    if not isinstance(n_hidden, int) or isinstance(n_hidden, bool) or n_hidden < 1:
        raise ValueError(f"hidden must be a positive int, got {n_hidden!r}")
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise ValueError(f"lr must be a finite number > 0, got {rate!r}")
    model0 = model_for_task(t, cell_name, n_hidden, seed).to(dev)
    xs, ys = t.batch(align_batch, seed=seed)
    xs, ys = xs.to(dev), ys.to(dev)
    aligner = _Aligner(xs, ys, t.objective)
    opts = {k.lower(): dict(v) for k, v in (rule_options or {}).items()}
    outdir = Path(out) if out is not None else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)

    entries = []
    for name in names:
        cand = candidate(name, t.seq_len, opts.get(name), model0)
        if cand.rule is None:
            log(f"[compare] {name}: skipped: {cand.reason}")
            entries.append(_entry(name, cand.options, "skipped", cand.reason))
            continue
        entry = _run_rule(
            name, cand.rule, cand.options, t, model0, aligner, epochs=epochs, lr=rate, seed=seed,
            device=dev, max_seconds=max_seconds, log=log,
        )  # fmt: skip
        if entry["status"] == "ok" and memory:
            entry["peak_memory_bytes"], entry["memory_error"] = _memory(
                task, task_options, t.batch_size, cell_name, n_hidden, seed, name, cand.options,
                entry["optimizer"] is not None, rate, str(dev),
            )  # fmt: skip
        if entry["status"] == "ok" and raster and outdir is not None:
            _raster(entry.pop("_model"), t, outdir / f"raster_{name}.png", f"{t.name} / {name}")
        entry.pop("_model", None)
        entries.append(entry)

    doc = json_safe(
        {
            "schema": "chronograd.compare/1",
            "command": command,
            "config": {
                "task": t.name,
                "task_options": dict(task_options or {}),
                "cell": cell_name,
                "hidden": n_hidden,
                "steps": t.seq_len,
                "epochs": epochs,
                "lr": rate,
                "seed": seed,
                "batch_size": t.batch_size,
                "batches": t.batches_per_epoch,
                "val_batches": t.val_batches,
                "align_batch": align_batch,
                "device": str(dev),
                "rules": names,
                "rule_options": opts,
                "memory": memory,
                "max_seconds": max_seconds,
            },
            "machine": machine(dev),
            "metric": {
                "name": t.metric.name,
                "higher_is_better": t.metric.higher_is_better,
                "chance": t.metric.chance,
            },
            "timing": TIMING,
            "memory": MEMORY if memory else "not measured (memory=False)",
            "rules": entries,
        }
    )
    if outdir is not None:
        write_compare(doc, outdir)
    return doc


def _run_rule(
    name: str, rule: LearningRule, options: dict[str, Any], task: Any, model0: nn.Module,
    aligner: _Aligner, *, epochs: int, lr: float, seed: int, device: torch.device,
    max_seconds: float | None, log: Log,
) -> dict[str, Any]:  # fmt: skip
    """Train a copy of ``model0`` with ``rule``; the comparison entry of one rule."""
    torch.manual_seed(seed)
    model = copy.deepcopy(model0)
    T = task.seq_len
    try:  # first use: one pass over the alignment batch, nothing applied
        state = model.init_state(aligner.xs.shape[1], device=device, dtype=aligner.xs.dtype)  # type: ignore[operator]
        carry0 = rule.init(model, state)
        align_init, direct, probe_s = aligner(rule, model, carry0, at_init=True)
    except (TypeError, ValueError) as e:
        log(f"[compare] {name}: skipped: fails on first use: {e}")
        return _entry(name, options, "skipped", f"fails on first use: {type(e).__name__}: {e}")
    n_batches = epochs * (task.batches_per_epoch + task.val_batches)
    estimate = probe_s * task.batch_size / aligner.xs.shape[1] * n_batches
    if max_seconds is not None and estimate > max_seconds:
        reason = f"estimated {estimate:.0f} s of training (from its first batch) > max_seconds={max_seconds:g}"
        log(f"[compare] {name}: skipped: {reason}")
        return _entry(name, options, "skipped", reason)

    torch.manual_seed(seed)
    trainer = Trainer(
        model, rule, task.objective, optimizer=False if direct else None, lr=lr,
        metrics={task.metric.name: task.metric}, device=device, progress=False,
    )  # fmt: skip
    trainer.carry = carry0  # the persistent parts the initial alignment used
    batch_ms: list[float] = []
    started: list[float] = []

    @trainer.on(Event.BATCH_STARTED)
    def _start(_: Trainer) -> None:
        sync(device)
        started.append(time.perf_counter())

    @trainer.on(Event.BATCH_COMPLETED)
    def _stop(_: Trainer) -> None:
        sync(device)
        batch_ms.append((time.perf_counter() - started[-1]) * 1e3)

    log(f"[compare] {name}: training {epochs} epochs (about {estimate:.0f} s)")
    t0 = time.perf_counter()
    try:
        history = trainer.fit(task.train, epochs, val=task.val)
    except (RuntimeError, ValueError, TypeError) as e:
        log(f"[compare] {name}: FAILED during training: {type(e).__name__}: {e}")
        reason = f"raised during training: {type(e).__name__}: {e}"
        return _entry(name, options, "failed", reason)
    seconds = time.perf_counter() - t0
    key = f"val_{task.metric.name}"
    better = max if task.metric.higher_is_better else min
    timed = batch_ms[1:] if len(batch_ms) > 1 else batch_ms  # the first batch warms up
    entry = _entry(name, options, "ok", None)
    entry.update(
        chunk=rule.chunk_length(T),
        optimizer=None if trainer.optimizer is None else type(trainer.optimizer).__name__.lower(),
        final_metric=history.last(key),
        best_metric=better(history[key]),
        final_val_loss=history.last("val_loss"),
        final_loss=history.last("loss"),
        alignment={
            "direction": "update" if direct else "gradient",
            "init": align_init,
            "end": aligner(rule, model, trainer.carry, at_init=False)[0],
        },
        ms_per_step=statistics.median(timed) / T,
        seconds=seconds,
        history=history.records,
        _model=model,
    )
    log(f"[compare] {name}: {key} = {entry['final_metric']:.4f} in {seconds:.1f} s")
    return entry


def _memory(
    task: str, task_options: Mapping[str, Any] | None, batch_size: int, cell: str, hidden: int,
    seed: int, rule: str, options: dict[str, Any], optimizer: bool, lr: float, device: str,
) -> tuple[int | None, str | None]:  # fmt: skip
    kwargs = {
        "task": task, "task_options": dict(task_options or {}), "batch_size": batch_size,
        "cell": cell, "hidden": hidden, "seed": seed, "rule": rule, "rule_options": options,
        "optimizer": optimizer, "lr": lr, "device": device,
    }  # fmt: skip
    try:
        return peak_memory(
            "chronograd.comparison.memory:compare_setup", kwargs, device=device
        ), None
    except Exception as e:  # a measurement must not sink the comparison; say why it is missing
        return (
            None,
            f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else e}",
        )


def _raster(model: nn.Module, task: Any, path: Path, title: str) -> None:
    from chronograd.activity import record
    from chronograd.viz import raster

    x, y = next(iter(task.val()))
    dev = next(model.parameters()).device
    x1, y1 = x[:, :1].to(dev), y[:, :1]
    raster(record(model, x1), path, inputs=x1, targets=y1, title=title)
