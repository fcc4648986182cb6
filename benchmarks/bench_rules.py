"""Issue 9 figures: each rule's time per step and peak memory vs T and vs N, as ratios to the
bare forward pass and to the machine's floors (streaming bandwidth, dense matmul).

A thin wrapper around ``chronograd bench`` (:func:`chronograd.comparison.bench`) that writes
``benchmarks/results/rules.md``. Usage:
``python benchmarks/bench_rules.py [--cell lif] [--rules bptt,tbptt] [--device cuda]``.
"""

from __future__ import annotations

import argparse

from chronograd.comparison import bench
from chronograd.comparison.report import bench_table

from _common import write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cell", default="lif")
    ap.add_argument("--rules", default="bptt,tbptt")
    ap.add_argument("--hidden", default="64,256,1024")
    ap.add_argument("--steps", default="100,1000,10000")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    args = ap.parse_args()
    command = (
        f"python benchmarks/bench_rules.py --cell {args.cell} --rules {args.rules} "
        f"--hidden {args.hidden} --steps {args.steps} --batch {args.batch} "
        f"--device {args.device} --repeats {args.repeats} --max-seconds {args.max_seconds:g}"
    )
    doc = bench(
        args.cell,
        args.rules,
        hidden=args.hidden,
        steps=args.steps,
        batch=args.batch,
        device=args.device,
        repeats=args.repeats,
        max_seconds=args.max_seconds,
        command=command,
    )
    lines = bench_table(doc).splitlines()
    lines += [
        "",
        "ms/step: median of one gradient() call / T. GFLOP/s and GB/s: matmul FLOPs and bytes "
        "touched by all ops (chronograd.bench.count_work) per second, as % of the floors. "
        "Peak memory: one call in a fresh process.",
    ]
    write("rules", "Rule cost vs T and N (issue 9)", lines, command)


if __name__ == "__main__":
    main()
