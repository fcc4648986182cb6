"""Issue 6 figures: time per step and peak memory of OTTT, SLTT, FPTT and BPTT.

A 784 -> N -> 10 feed-forward spiking network (``spiking_mlp``: LIF layer, linear readout),
B = 32, Poisson inputs (rate 0.1), a cross-entropy loss at every step, SGD. One call = one
training sequence (forward, gradients and every update the rule applies). N in {256, 1024},
T in {16, 64, 256}. Peak memory is measured in a fresh process per configuration
(``chronograd.bench.peak_memory``). Passes per step are counted, not inferred: forward steps
from the rows the first layer's weight multiplies, backward passes from calls of
``torch.autograd.grad``.

Aims: OTTT and SLTT memory flat in T; FPTT (dual form) at most one forward and one backward
pass per step. Usage: ``python benchmarks/bench_online.py [--device cuda] [--repeats 3]
[--threads 1]`` (one CPU thread by default: small per-step ops on an oversubscribed host are
dominated by thread contention otherwise).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import torch

import chronograd as cg
from chronograd.bench import median_ms, peak_memory
from chronograd.cells import spiking_mlp
from chronograd.rules import BPTT, FPTT, OTTT, SLTT
from chronograd.traces import intercept_linears
from chronograd.training import apply_to_model, run_sequence

from _common import write

B = 32
RULES: dict[str, Callable[[], cg.LearningRule]] = {
    "BPTT": BPTT,
    "OTTT": OTTT,
    "OTTT online": lambda: OTTT(chunk_size=1),
    "SLTT": SLTT,
    "FPTT dual": lambda: FPTT(0.1),
    "FPTT two-pass": lambda: FPTT(0.1, form="two_pass"),
}


def setup(rule: str, n: int, steps: int, device: str = "cpu") -> Callable[[], Any]:
    """Build the model, data and optimizer; return one training sequence as a callable."""
    return build(rule, n, steps, device)[1]


def build(rule: str, n: int, steps: int, device: str) -> tuple[torch.nn.Module, Callable[[], Any]]:
    """The model and one training sequence as a callable."""
    torch.manual_seed(0)
    dev = torch.device(device)
    model = spiking_mlp((784, n, 10), tau_mem=10.0, threshold=1.0, weight_scale=4.0).to(dev)
    xs = (torch.rand(steps, B, 784, device=dev) < 0.1).float()
    ys = torch.randint(0, 10, (B,), device=dev).expand(steps, B)
    obj = cg.Objective("cross_entropy")
    r = RULES[rule]()
    apply = apply_to_model(model, torch.optim.SGD(model.parameters(), lr=1e-3))
    # the carry a trainer would hold after its first batch (OTTT's relation probe, FPTT's W̄)
    carry = run_sequence(r, model, xs[:1], ys[:1], obj, apply=apply).carry

    def run() -> None:
        run_sequence(r, model, xs, ys, obj, carry=carry, apply=apply)

    return model, run


def count_passes(rule: str, n: int, steps: int, device: str) -> tuple[float, float]:
    """(forward steps, backward passes) per step of one training sequence."""
    model, run = build(rule, n, steps, device)
    real = torch.autograd.grad
    state = {"calls": 0, "depth": 0}

    def counting(*args: Any, **kwargs: Any) -> Any:  # outermost calls only
        state["calls"] += state["depth"] == 0
        state["depth"] += 1
        try:
            return real(*args, **kwargs)
        finally:
            state["depth"] -= 1

    torch.autograd.grad = counting  # type: ignore[assignment]
    try:
        with intercept_linears({"w": model.layers[0].input.weight}) as rec:
            run()
    finally:
        torch.autograd.grad = real
    rows = sum(c.input.shape[:-1].numel() for c in rec.calls)
    return rows / B / steps, state["calls"] / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", default="256,1024")
    ap.add_argument("--steps", default="16,64,256")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1: stable on a busy host)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cpu":
        # The CPU figure is the peak resident set of the measuring process. glibc's dynamic
        # mmap threshold otherwise keeps freed per-step buffers resident (in the heap), so the
        # resident set of every rule would grow with T whatever its live tensors; a fixed
        # threshold returns large blocks to the system when freed. Read by the child processes.
        os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "16384")
        os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", "0")
    sizes = [int(s) for s in args.sizes.split(",")]
    steps = [int(s) for s in args.steps.split(",")]
    names = list(RULES)
    head = "| N | T | " + " | ".join(names) + " |"
    sep = "|---|---|" + "---|" * len(names)
    t_rows = [
        "ms per step (one training sequence / T)",
        "",
        head + " FPTT dual / SLTT |",
        sep + "---|",
    ]
    m_rows = ["peak memory, MB (fresh process per cell)", "", head, sep]
    mem: dict[tuple[str, int, int], float] = {}
    for n in sizes:
        for T in steps:
            ms = {}
            for name in names:
                ms[name] = (
                    median_ms(setup(name, n, T, args.device), repeats=args.repeats, device=dev) / T
                )
                kw = {"rule": name, "n": n, "steps": T, "device": args.device}
                mem[(name, n, T)] = (
                    peak_memory("bench_online:setup", kw, device=args.device) / 2**20
                )
            t_rows.append(
                f"| {n} | {T} | " + " | ".join(f"{ms[k]:.3f}" for k in names)
                + f" | {ms['FPTT dual'] / ms['SLTT']:.2f}x |"
            )  # fmt: skip
            m_rows.append(
                f"| {n} | {T} | " + " | ".join(f"{mem[(k, n, T)]:.1f}" for k in names) + " |"
            )
    lo, hi = steps[0], steps[-1]
    f_rows = [
        f"memory growth from T={lo} to T={hi} (MB at T={hi} / MB at T={lo})",
        "",
        "| N | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for n in sizes:
        f_rows.append(
            f"| {n} | "
            + " | ".join(f"{mem[(k, n, hi)] / max(mem[(k, n, lo)], 1e-9):.2f}x" for k in names)
            + " |"
        )
    c_rows = [
        f"passes per step, counted (N={sizes[0]}, T={steps[0]})",
        "",
        "| rule | forward steps / step | backward passes / step |",
        "|---|---|---|",
    ]
    for name in names:
        f, b = count_passes(name, sizes[0], steps[0], args.device)
        c_rows.append(f"| {name} | {f:.2f} | {b:.2f} |")
    lines = [*t_rows, "", *m_rows, "", *f_rows, "", *c_rows]
    write("online", "OTTT, SLTT, FPTT and BPTT on a 784-N-10 spiking network (issue 6)", lines,
          "python benchmarks/bench_online.py")  # fmt: skip


if __name__ == "__main__":
    main()
