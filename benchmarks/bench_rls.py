"""Issue 7 figures: the cost of an RLS update, sequential rank-1 vs Woodbury, and of FORCE.

1. One RLS update step over ``B`` rows of ``I`` inputs (``O = 10`` outputs): ``B`` sequential
   rank-1 updates vs one Woodbury rank-``B`` update (same result), ms per step and ratio.
2. FORCE on the chaotic rate RNN (B = 1, update every step, ``strategy="inputs"`` on the
   readout): ms per step of training vs a bare forward step, and the ratio.

Usage: ``python benchmarks/bench_rls.py [--device cuda] [--repeats 5] [--threads 1]``.
"""

from __future__ import annotations

import argparse

import torch

from chronograd.cells import ChaoticRNN
from chronograd.least_squares.core import initial_p, rls_steps_
from chronograd.objectives import Objective
from chronograd.rules import RLS
from chronograd.sequence import unroll
from chronograd.training import apply_to_model, run_sequence

from _common import median_ms, write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--inputs", default="256,1024")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--hidden", default="300,1000")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    rows = [
        "| I | B | sequential ms/step | Woodbury ms/step | sequential / Woodbury |",
        "|---|---|---|---|---|",
    ]
    for n_in in (int(s) for s in args.inputs.split(",")):
        for b in (int(s) for s in args.batches.split(",")):
            g = torch.Generator(device=dev).manual_seed(0)
            phi = torch.randn(b, n_in, device=dev, generator=g)
            err = torch.randn(b, 10, device=dev, generator=g)
            P = initial_p(n_in, 1.0, device=dev, dtype=torch.float32)
            t = {}
            for mode in ("sequential", "woodbury"):
                t[mode] = median_ms(
                    lambda: rls_steps_(P, [(phi, err)], 0.999, mode),
                    repeats=args.repeats, device=dev,
                )  # fmt: skip
            rows.append(
                f"| {n_in} | {b} | {t['sequential']:.3f} | {t['woodbury']:.3f} | "
                f"{t['sequential'] / t['woodbury']:.1f}x |"
            )
    rows += [
        "",
        "| FORCE, N | forward ms/step | FORCE training ms/step | training / forward |",
        "|---|---|---|---|",
    ]
    T = args.steps
    for n in (int(s) for s in args.hidden.split(",")):
        model = ChaoticRNN(1, n, 1, seed=0).to(dev)
        xs = torch.zeros(T, 1, 1, device=dev)
        ys = torch.sin(torch.arange(T, device=dev) / 10.0).view(T, 1, 1)
        rule = RLS(strategy="inputs", params=("readout.weight",))

        def forward() -> None:
            with torch.no_grad():
                unroll(model, xs)

        def force() -> None:
            run_sequence(rule, model, xs, ys, Objective("mse"), apply=apply_to_model(model, None))

        f = median_ms(forward, repeats=args.repeats, device=dev) / T
        r = median_ms(force, repeats=args.repeats, device=dev) / T
        rows.append(f"| {n} | {f:.3f} | {r:.3f} | {r / f:.1f}x |")
    command = "python benchmarks/bench_rls.py" + (
        f" --threads {args.threads}" if args.threads is not None else ""
    )
    write("rls", "RLS update cost and FORCE overhead (issue 7)", rows, command)


if __name__ == "__main__":
    main()
