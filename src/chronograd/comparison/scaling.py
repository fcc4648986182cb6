"""``chronograd bench``: time per step and peak memory of each rule vs ``T`` and vs ``N``.

Each rule's cost is measured on a one-layer network of the given cell with a readout of
``outputs`` units and an MSE loss at every step, over two sweeps: ``T`` in ``steps`` at
``N = at_hidden`` and ``N`` in ``hidden`` at ``T = at_steps``. For every point:

* ``ms_per_step``: median (over ``repeats`` calls, after one warm-up) of one
  ``gradient(rule, model, xs, ys, objective)`` call divided by ``T``; the bare forward pass
  (``unroll`` without a graph) is measured the same way as the reference, ``"forward"``.
* ``peak_memory_bytes``: peak memory of one such call in its own fresh process
  (:func:`chronograd.bench.peak_memory`).
* ``flops``, ``bytes``: work of the call (:func:`chronograd.bench.count_work`), counted on
  ``min(T, 64)`` steps and scaled by ``T / min(T, 64)``; achieved ``gflops = flops / time`` and
  ``gbs = bytes / time``, and their fractions of the machine's floors measured at the start
  (``matmul_fraction``: of dense-matmul GFLOP/s; ``bandwidth_fraction``: of streaming GB/s).
  A matmul-bound rule (BPTT at large ``N``) is judged by the first, a memory-bound one (trace
  updates) by the second.

Guards: before a point runs, its time is predicted from probes over 4 and 64 steps (a fixed
cost per call plus a marginal cost per step) and its memory from the points already measured
in the same sweep (log-log slope of the last two, at least 1 in ``T`` and 2 in ``N``); a point
predicted to take more than ``max_seconds`` or more than ``max_memory_bytes`` is skipped with
the reason instead of run. Without memory measurements (``memory=False``) only the time guard
applies.

JSON schema (``bench.json``; ``null`` wherever a value is undefined or not finite)::

    schema    "chronograd.bench/1"
    command   the command line that reproduces the file
    config    cell, rules (as requested), hidden, steps, at_hidden, at_steps, batch, inputs
              (null: N), outputs, device, repeats, seed, memory, max_seconds,
              max_memory_bytes, rule_options
    machine   cpu, cpu_count, threads, torch, device, gpu
    floors    bandwidth_gbs, matmul_gflops (measured at the start, same device)
    rules     [{name, status ("ok" or "skipped"), reason, options}] for the requested rules
    points    one entry per (series, N, T) measured or skipped:
      rule                "forward" (reference) or a rule name
      hidden, steps       N and T
      sweeps              ["T"], ["N"] or both: the sweeps the point belongs to
      status              "ok", "skipped" (guard; see reason) or "failed" (raised)
      reason              why it was skipped or failed, else null
      ms_per_step         median ms of one call / T
      vs_forward          ms_per_step / forward's at the same (N, T)
      peak_memory_bytes   peak memory of one call (fresh process)
      memory_vs_forward   peak_memory_bytes / forward's at the same (N, T)
      memory_error        why the memory measurement failed, else null
      flops, bytes        work of one call (see above)
      gflops, gbs         achieved FLOP/s (1e9) and bytes/s (1e9)
      matmul_fraction     gflops / floors.matmul_gflops
      bandwidth_fraction  gbs / floors.bandwidth_gbs
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from chronograd.bench import bandwidth_gbs, count_work, matmul_gflops, median_ms, peak_memory, sync
from chronograd.comparison.common import (
    build_rule,
    candidate,
    json_safe,
    machine,
    split_ints,
    split_names,
)
from chronograd.comparison.memory import bench_inputs
from chronograd.comparison.report import write_bench
from chronograd.rules import gradient
from chronograd.sequence import unroll

Log = Callable[[str], None]
PROBE_STEPS, COUNT_STEPS, PROBE_BUDGET = (4, 64), 64, 2.0
DEFAULT_SLOPE = {"T": 1.0, "N": 2.0}


def default_max_memory(device: torch.device) -> int:
    """Half the machine's RAM on the CPU, 80% of the GPU's memory on CUDA."""
    if device.type == "cuda":
        return int(0.8 * torch.cuda.get_device_properties(device).total_memory)
    return int(0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _point(rule: str, hidden: int, steps: int) -> dict[str, Any]:
    return {
        "rule": rule, "hidden": hidden, "steps": steps, "sweeps": [], "status": "ok",
        "reason": None, "ms_per_step": None, "vs_forward": None, "peak_memory_bytes": None,
        "memory_vs_forward": None, "memory_error": None, "flops": None, "bytes": None,
        "gflops": None, "gbs": None, "matmul_fraction": None, "bandwidth_fraction": None,
    }  # fmt: skip


def _seconds(fn: Callable[[], None], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def _predict_seconds(
    call: Callable[[int], Callable[[], None]], t: int, device: torch.device
) -> float:
    """Seconds of one call over ``t`` steps, predicted from short probes.

    A warm-up and a timed call over ``k0 = min(t, 4)`` steps; then, when a call over
    ``k1 = min(t, 64)`` steps is predicted to take less than ``PROBE_BUDGET`` seconds, a timed
    call over ``k1`` steps, and the prediction is that call plus the marginal cost per step
    ``(s1 - s0) / (k1 - k0)`` for the remaining steps (per-call overheads are not scaled by
    ``t``). Otherwise ``s0 · t / k0`` (an overestimate when overheads dominate ``s0``).
    """
    k0, k1 = min(t, PROBE_STEPS[0]), min(t, PROBE_STEPS[1])
    call(k0)()  # warm-up
    s0 = _seconds(call(k0), device)
    if k1 == k0 or s0 * k1 / k0 > PROBE_BUDGET:
        return s0 * t / k0
    s1 = _seconds(call(k1), device)
    return s1 + max(s1 - s0, 0.0) / (k1 - k0) * (t - k1)


def _predict_memory(done: list[dict[str, Any]], x: int, sweep: str) -> float | None:
    """Extrapolate the peak memory at ``x`` from the measured points of this sweep."""
    key = "steps" if sweep == "T" else "hidden"
    pts = [(p[key], p["peak_memory_bytes"]) for p in done if p.get("peak_memory_bytes")]
    if not pts:
        return None
    slope = DEFAULT_SLOPE[sweep]
    if len(pts) >= 2:
        (x0, m0), (x1, m1) = pts[-2], pts[-1]
        if x1 > x0 and m0 > 0:
            slope = max(slope, math.log(m1 / m0) / math.log(x1 / x0))
    x1, m1 = pts[-1]
    return m1 * (x / x1) ** slope


def bench(
    cell: str,
    rules: str | Sequence[str],
    *,
    hidden: str | Sequence[int] = (64, 256, 1024),
    steps: str | Sequence[int] = (100, 1000, 10000),
    at_hidden: int | None = None,
    at_steps: int | None = None,
    batch: int = 16,
    inputs: int | None = None,
    outputs: int = 10,
    device: str = "cpu",
    repeats: int = 3,
    seed: int = 0,
    memory: bool = True,
    max_seconds: float = 60.0,
    max_memory_bytes: int | None = None,
    rule_options: Mapping[str, Mapping[str, Any]] | None = None,
    floors: Mapping[str, float] | None = None,
    out: str | Path | None = None,
    command: str | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Measure each rule's cost vs ``T`` and vs ``N`` (see the module docstring).

    Args:
        cell: ``rnn``, ``gru``, ``lif``, ``alif`` or ``lsnn``.
        rules: registry names (``"bptt,tbptt"`` or a list); the bare forward is always added.
        hidden, steps: the ``N`` and ``T`` sweeps. at_hidden, at_steps: the fixed ``N`` of the
            ``T`` sweep and the fixed ``T`` of the ``N`` sweep (default: the smallest of each).
        batch: ``B``; inputs: input features (default ``N``); outputs: readout units.
        repeats: timed calls per point (after one warm-up).
        memory: measure peak memory (one fresh process per point).
        max_seconds: skip a point predicted to take longer than this (all its calls together).
        max_memory_bytes: skip a point predicted to need more (default: half the RAM, or 80%
            of the GPU's memory).
        rule_options: ``{rule: {option: value}}`` on top of the comparison defaults.
        floors: ``{"bandwidth_gbs": ..., "matmul_gflops": ...}`` measured earlier on the same
            device (default: measured now).
        out: directory for ``bench.json``, ``bench.md``, ``scaling_T.png``, ``scaling_N.png``.
    """
    names = split_names(rules)
    Ns, Ts = split_ints(hidden, "hidden"), split_ints(steps, "steps")
    n0, t0 = at_hidden or Ns[0], at_steps or Ts[0]
    for name, v in (("batch", batch), ("outputs", outputs), ("repeats", repeats)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    dev = torch.device(device)
    cap = max_memory_bytes or default_max_memory(dev)
    opts = {k.lower(): dict(v) for k, v in (rule_options or {}).items()}

    if floors is None:
        log(f"[bench] measuring the machine's floors on {dev} ...")
        floors = {"bandwidth_gbs": bandwidth_gbs(dev), "matmul_gflops": matmul_gflops(dev)}
    floors = {k: float(floors[k]) for k in ("bandwidth_gbs", "matmul_gflops")}
    log(
        f"[bench] bandwidth {floors['bandwidth_gbs']:.1f} GB/s, matmul {floors['matmul_gflops']:.1f} GFLOP/s"
    )

    probe_model = bench_inputs(cell, min(Ns), 2, 1, inputs or min(Ns), outputs, seed, str(dev))[0]
    rule_entries, series = [], ["forward"]
    for name in names:
        c = candidate(name, t0, opts.get(name), probe_model)
        status = "ok" if c.rule is not None else "skipped"
        rule_entries.append(
            {"name": name, "status": status, "reason": c.reason, "options": c.options}
        )
        if c.rule is None:
            log(f"[bench] {name}: skipped: {c.reason}")
        else:
            series.append(name)

    spec = dict(cell=cell, batch=batch, inputs=inputs, outputs=outputs, seed=seed, device=str(dev))
    points: dict[tuple[str, int, int], dict[str, Any]] = {}
    for name in series:
        for sweep, xs in (("T", [(n0, t) for t in Ts]), ("N", [(n, t0) for n in Ns])):
            done: list[dict[str, Any]] = []
            for n, t in xs:
                key = (name, n, t)
                if key not in points:
                    points[key] = _measure(
                        name, n, t, opts.get(name), spec, done, sweep, repeats=repeats,
                        memory=memory, max_seconds=max_seconds, cap=cap, floors=floors, log=log,
                    )  # fmt: skip
                points[key]["sweeps"].append(sweep)
                if points[key]["status"] == "ok":
                    done.append(points[key])

    for (name, n, t), p in points.items():
        ref = points.get(("forward", n, t))
        if ref is None or name == "forward":
            continue
        if p["ms_per_step"] and ref["ms_per_step"]:
            p["vs_forward"] = p["ms_per_step"] / ref["ms_per_step"]
        if p["peak_memory_bytes"] and ref["peak_memory_bytes"]:
            p["memory_vs_forward"] = p["peak_memory_bytes"] / ref["peak_memory_bytes"]

    doc = json_safe(
        {
            "schema": "chronograd.bench/1",
            "command": command,
            "config": {
                "cell": cell,
                "rules": names,
                "hidden": Ns,
                "steps": Ts,
                "at_hidden": n0,
                "at_steps": t0,
                "batch": batch,
                "inputs": inputs,
                "outputs": outputs,
                "device": str(dev),
                "repeats": repeats,
                "seed": seed,
                "memory": memory,
                "max_seconds": max_seconds,
                "max_memory_bytes": cap,
                "rule_options": opts,
            },
            "machine": machine(dev),
            "floors": floors,
            "rules": rule_entries,
            "points": list(points.values()),
        }
    )
    if out is not None:
        write_bench(doc, Path(out))
    return doc


def _measure(
    name: str, n: int, t: int, options: Mapping[str, Any] | None, spec: dict[str, Any],
    done: list[dict[str, Any]], sweep: str, *, repeats: int, memory: bool, max_seconds: float,
    cap: int, floors: dict[str, float], log: Log,
) -> dict[str, Any]:  # fmt: skip
    """Measure one point (or skip it when the guards predict it too large)."""
    p = _point(name, n, t)
    where = f"[bench] {name} N={n} T={t}"
    mem = _predict_memory(done, n if sweep == "N" else t, sweep) if memory else None
    if mem is not None and mem > cap:
        p.update(
            status="skipped",
            reason=f"predicted peak memory {mem / 2**30:.1f} GiB > limit {cap / 2**30:.1f} GiB",
        )
        log(f"{where}: skipped: {p['reason']}")
        return p
    dev = torch.device(spec["device"])
    try:
        model, xs, ys, objective = bench_inputs(
            spec["cell"], n, t, spec["batch"], spec["inputs"] or n, spec["outputs"], spec["seed"],
            spec["device"],
        )  # fmt: skip
        rule = None if name == "forward" else build_rule(name, t, options)

        def call(k: int) -> Callable[[], None]:
            x, y = xs[:k], ys[:k]
            if rule is None:

                def forward() -> None:
                    with torch.no_grad():
                        unroll(model, x)

                return forward

            def grad() -> None:
                gradient(rule, model, x, y, objective)

            return grad

        per_call = _predict_seconds(call, t, dev)
        predicted = per_call * (repeats + 1 + (2 if memory else 0))  # memory: warm-up + call
        if predicted > max_seconds:
            p.update(
                status="skipped",
                reason=f"predicted {predicted:.0f} s > max_seconds={max_seconds:g}",
            )
            log(f"{where}: skipped: {p['reason']}")
            return p
        ms = median_ms(call(t), repeats=repeats, warmup=1, device=dev)
        c = min(t, COUNT_STEPS)
        work = count_work(call(c))
        flops, nbytes = work.flops * t / c, work.bytes * t / c
    except (RuntimeError, MemoryError, TypeError, ValueError) as e:
        p.update(
            status="failed",
            reason=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
        )
        log(f"{where}: failed: {p['reason']}")
        return p
    sec = ms * 1e-3
    p.update(
        ms_per_step=ms / t, flops=flops, bytes=nbytes, gflops=flops / sec / 1e9,
        gbs=nbytes / sec / 1e9, matmul_fraction=flops / sec / 1e9 / floors["matmul_gflops"],
        bandwidth_fraction=nbytes / sec / 1e9 / floors["bandwidth_gbs"],
    )  # fmt: skip
    if memory:
        kwargs = {
            "cell": spec["cell"], "rule": name, "rule_options": dict(options or {}), "hidden": n,
            "steps": t, "batch": spec["batch"], "inputs": spec["inputs"] or n,
            "outputs": spec["outputs"], "seed": spec["seed"], "device": spec["device"],
        }  # fmt: skip
        try:
            p["peak_memory_bytes"] = peak_memory(
                "chronograd.comparison.memory:bench_setup", kwargs, device=spec["device"],
                timeout=max(120.0, 10 * per_call + 60),
            )  # fmt: skip
        except Exception as e:  # a failed measurement must not sink the benchmark
            p["memory_error"] = (
                f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
            )
    log(
        f"{where}: {p['ms_per_step']:.4f} ms/step, {p['gflops']:.2f} GFLOP/s, {p['gbs']:.2f} GB/s"
        + (f", peak {p['peak_memory_bytes'] / 2**20:.1f} MiB" if p["peak_memory_bytes"] else "")
    )
    return p
