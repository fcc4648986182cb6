"""Each rule's gradient of one sequence over the bare forward pass (issues 15 and 16).

LIF(N) + LeakyReadout, B = 16, T = 100, 64 inputs, an MSE loss at every step, one CPU thread.
For every rule, the time of ``cg.gradient(rule, ...)`` (driver, chunks, the rule's work) is
divided by the time of ``cg.unroll`` under ``no_grad``. Rounds are interleaved (every rule
once per round, in order) and medians taken over rounds, so a busy machine slows all columns
alike; ratios are from one run.

Usage: ``python benchmarks/bench_overhead.py [--hidden 256] [--rounds 7] [--threads 1]
[--out overhead]``. ``--src DIR`` imports chronograd from another checkout (a before/after
comparison of a refactor on the same machine, in the same run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--src", default=None, help="import chronograd from this src directory")
    p.add_argument("--out", default="overhead", help="results/<out>.md")
    p.add_argument("--rules", default=None, help="comma-separated subset of the rule names")
    args = p.parse_args()
    if args.src:
        sys.path.insert(0, args.src)
    import chronograd as cg
    from chronograd.cells import LIF, LeakyReadout, Stack
    from chronograd.rules import BPTT, DRTRL, FPTT, OTTT, SLTT, TBPTT, EProp, PPProp

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from _common import write

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    N, T, B, I = args.hidden, args.steps, args.batch, 64
    model = Stack(LIF(I, N, tau_mem=2.0, threshold=0.6), LeakyReadout(N, 2, kappa=0.6))
    xs = (torch.rand(T, B, I) < 0.1).float()
    ys = torch.randn(T, B, 2)
    obj = cg.Objective("mse")
    rules: dict[str, Callable[[], object]] = {
        "BPTT": BPTT,
        "TBPTT(25)": lambda: TBPTT(25),
        "OTTT": OTTT,
        "SLTT": SLTT,
        "e-prop": EProp,
        "pp-prop": PPProp,
        "D-RTRL": DRTRL,
        "FPTT": lambda: FPTT(0.1),
    }
    if args.rules:
        keep = set(args.rules.split(","))
        rules = {k: v for k, v in rules.items() if k in keep}
    built = {k: f() for k, f in rules.items()}

    def forward() -> None:
        with torch.no_grad():
            cg.unroll(model, xs)

    calls: dict[str, Callable[[], object]] = {"forward": forward}
    for name, rule in built.items():
        calls[name] = lambda rule=rule: cg.gradient(rule, model, xs, ys, obj)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for fn in calls.values():  # warm-up: caches, compiled graphs
        fn()
    for _ in range(args.rounds):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    fwd = statistics.median(times["forward"])
    lines = [
        f"LIF({N}) + LeakyReadout, B={B}, T={T}, {I} inputs, MSE; {args.rounds} interleaved "
        f"rounds, {args.threads} thread(s); chronograd from {cg.__file__}",
        "",
        "| rule | ms (median) | × forward |",
        "|---|---|---|",
        f"| forward (no_grad) | {fwd:.2f} | 1.00 |",
    ]
    for k in built:
        m = statistics.median(times[k])
        lines.append(f"| {k} | {m:.2f} | {m / fwd:.2f} |")
    cmd = "python benchmarks/bench_overhead.py " + " ".join(sys.argv[1:])
    write(args.out, "Gradient of one sequence over the bare forward pass", lines, cmd)


if __name__ == "__main__":
    main()
