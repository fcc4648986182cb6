"""Issue 2 figures: ms per step of a bare forward (no grad) and of BPTT, and their ratio.

LIF and tanh RNN layers (recurrent, with a linear readout) at N in {256, 1024}, B=16, T=200.
BPTT = forward with the graph + backward of an MSE loss over every step. Aim: BPTT <= 3.5x the
bare forward at N=1024. Usage: ``python benchmarks/bench_bptt.py [--device cuda] [--repeats 5]``.
"""

from __future__ import annotations

import argparse

import torch

import chronograd as cg
from chronograd.cells import LIF, LeakyReadout, LeakyRNN, Stack

from _common import median_ms, write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", default="256,1024")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    dev = torch.device(args.device)
    T, B = args.steps, args.batch
    rows = [
        "| cell | N | forward ms/step | BPTT ms/step | BPTT / forward |",
        "|---|---|---|---|---|",
    ]
    for name in ("lif", "tanh"):
        for n in (int(s) for s in args.sizes.split(",")):
            torch.manual_seed(0)
            core = LIF(n, n, tau_mem=10.0) if name == "lif" else LeakyRNN(n, n)
            model = Stack(core, LeakyReadout(n, 10)).to(dev)
            xs = (
                (torch.rand(T, B, n, device=dev) < 0.05).float()
                if name == "lif"
                else torch.randn(T, B, n, device=dev)
            )
            ys = torch.randn(T, B, 10, device=dev)
            obj = cg.Objective("mse")
            rule = cg.BPTT()

            def forward() -> None:
                with torch.no_grad():
                    cg.unroll(model, xs)

            def bptt() -> None:
                cg.gradient(rule, model, xs, ys, obj)

            f = median_ms(forward, repeats=args.repeats, device=dev) / T
            b = median_ms(bptt, repeats=args.repeats, device=dev) / T
            rows.append(f"| {name} | {n} | {f:.3f} | {b:.3f} | {b / f:.2f}x |")
    write("bptt", "BPTT vs bare forward (issue 2)", rows, "python benchmarks/bench_bptt.py")


if __name__ == "__main__":
    main()
