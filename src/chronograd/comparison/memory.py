"""Setups measured by :func:`chronograd.bench.peak_memory` in a fresh process.

Each ``*_setup(**kwargs)`` rebuilds, from JSON-serialisable arguments only, exactly what the
parent process measures and returns the zero-argument callable whose peak memory is taken.
Rules are found by registry name, so a rule registered at run time in the parent (not through
an import of :mod:`chronograd`) is unknown here; the caller reports that as a failed memory
measurement, not as a failed comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from chronograd.comparison.common import build_rule, make_task, model_for_task
from chronograd.models import build_model
from chronograd.objectives import Objective
from chronograd.rules import gradient
from chronograd.sequence import unroll
from chronograd.training.apply import apply_to_model, run_sequence


def compare_setup(
    *,
    task: str,
    task_options: dict[str, Any],
    batch_size: int | None,
    cell: str | None,
    hidden: int | None,
    seed: int,
    rule: str,
    rule_options: dict[str, Any],
    optimizer: bool,
    lr: float,
    device: str,
) -> Callable[[], None]:
    """One training batch of ``chronograd compare``: the rule over the first batch of epoch 1,
    with its optimizer step(s) (Adam, as in the comparison) or its direct updates."""
    t = make_task(task, seed=seed, options=task_options, batch_size=batch_size)
    model = model_for_task(t, cell, hidden, seed).to(device)
    r = build_rule(rule, t.seq_len, rule_options)
    opt = torch.optim.Adam(list(r.trained(model).values()), lr=lr) if optimizer else None
    apply = apply_to_model(model, opt)
    x, y = next(iter(t.train(1)))
    x, y = x.to(device), y.to(device)
    torch.manual_seed(seed)

    def run() -> None:
        run_sequence(r, model, x, y, t.objective, apply=apply)

    return run


def bench_inputs(
    cell: str, hidden: int, steps: int, batch: int, inputs: int, outputs: int, seed: int,
    device: str,
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, Objective]:  # fmt: skip
    """The model, inputs ``(T, B, I)``, targets ``(T, B, O)`` and MSE objective of one bench point.

    Spiking cells get Poisson inputs (rate 0.05 per step), rate cells Gaussian inputs.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model(cell, inputs, outputs, hidden).to(device)
    shape = (steps, batch, inputs)
    spiking = cell in ("lif", "alif", "lsnn")
    xs = (
        (torch.rand(shape, generator=g) < 0.05).float()
        if spiking
        else torch.randn(shape, generator=g)
    )
    ys = torch.randn((steps, batch, outputs), generator=g)
    return model, xs.to(device), ys.to(device), Objective("mse")


def bench_setup(
    *,
    cell: str,
    rule: str,
    rule_options: dict[str, Any],
    hidden: int,
    steps: int,
    batch: int,
    inputs: int,
    outputs: int,
    seed: int,
    device: str,
) -> Callable[[], None]:
    """One ``gradient(rule, ...)`` call of ``chronograd bench`` (``rule="forward"``: the bare
    forward pass without a graph, the reference)."""
    model, xs, ys, objective = bench_inputs(
        cell, hidden, steps, batch, inputs, outputs, seed, device
    )
    if rule == "forward":

        def forward() -> None:
            with torch.no_grad():
                unroll(model, xs)

        return forward
    r = build_rule(rule, steps, rule_options)

    def run() -> None:
        gradient(r, model, xs, ys, objective)

    return run
