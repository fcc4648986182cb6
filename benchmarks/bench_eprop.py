"""Issue 5 figures: e-prop's time per step and peak memory.

1. ms per step (B = 16, T = 200) of a bare forward (no grad), BPTT and e-prop on
   ``Stack(LIF or ALIF(H, H), LeakyReadout(H, 10, κ = 0.9))`` at H in {256, 1024} (ALIF: half
   the neurons adapt, as an LSNN). e-prop three ways, all the same gradient:
   ``reverse`` (one update per sequence by the reverse-time adjoint, no ``(B, I, H)`` trace:
   ``EProp()``'s default for ``chunk_size=None``), ``traces`` (forward traces, one update per
   sequence, memory flat in ``T``) and ``traces, online`` (forward traces, an update every step,
   ``chunk_size=1``: every step contracts and advances the whole trace); and the generic trace
   engine ``DRTRL(readout="filter")``, whose gradient equals symmetric e-prop's, to show what
   the specialised LIF/ALIF path gains.
2. Peak memory (``chronograd.bench.peak_memory``, one fresh process each) of the forward, BPTT
   and e-prop (``traces`` and ``reverse``) at T = 100, 1000, 10000 (H = 128, LIF).

Timing: median CPU time of this process with one torch thread (``bench_traces.timed``;
``--wall`` for the wall clock with torch's default threads).

Usage: ``python benchmarks/bench_eprop.py [--repeats 3] [--sizes 256,1024] [--wall]
[--skip-timing | --skip-memory]``.
"""

from __future__ import annotations

import argparse
from typing import Any

import bench_traces
import torch

import chronograd as cg
from chronograd.bench import peak_memory
from chronograd.cells import ALIF, LIF, LeakyReadout, Stack, lsnn_beta
from chronograd.rules import DRTRL, EProp

from _common import write

RULES = {
    "bptt": lambda: cg.BPTT(),
    "reverse": lambda: EProp(method="reverse"),
    "traces": lambda: EProp(method="traces"),
    "online": lambda: EProp(chunk_size=1),
    # the generic trace engine with the same gradient as symmetric e-prop: what the fast path beats
    "engine": lambda: DRTRL(readout="filter"),
}


def build(cell: str, H: int, T: int, B: int = 16, device: str = "cpu") -> tuple[Any, Any, Any]:
    torch.manual_seed(0)
    if cell == "lif":
        core: Any = LIF(H, H, tau_mem=10.0)
    else:
        core = ALIF(H, H, tau_mem=10.0, tau_adapt=100.0, beta=lsnn_beta(H // 2, H - H // 2, 0.2))
    model = Stack(core, LeakyReadout(H, 10, kappa=0.9)).to(device)
    xs = (torch.rand(T, B, H, device=device) < 0.05).float()
    return model, xs, torch.randn(T, B, 10, device=device)


def setup(rule: str, T: int, H: int = 128, cell: str = "lif", device: str = "cpu") -> Any:
    """For ``peak_memory``: one gradient (or the bare forward) over a ``T``-step sequence."""
    model, xs, ys = build(cell, H, T, device=device)
    if rule == "forward":

        def fwd() -> Any:
            with torch.no_grad():
                return cg.unroll(model, xs)

        return fwd
    r = RULES[rule]()
    obj = cg.Objective("mse")
    return lambda: cg.gradient(r, model, xs, ys, obj)


def timing(args: argparse.Namespace, rows: list[str]) -> None:
    T = 200
    rows += [
        f"### Time per step (B = 16, T = {T}, {torch.get_num_threads()} thread(s), "
        f"{'wall clock' if bench_traces.WALL else 'process CPU time'})",
        "",
        "| cell | H | forward ms | BPTT ms | e-prop reverse ms | e-prop traces ms | e-prop online ms "
        "| engine ms | BPTT / fwd | reverse / fwd | traces / fwd | online / fwd | engine / fwd |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in ("lif", "alif"):
        for H in (int(s) for s in args.sizes.split(",")):
            model, xs, ys = build(cell, H, T)
            obj = cg.Objective("mse")

            def fwd() -> None:
                with torch.no_grad():
                    cg.unroll(model, xs)

            ms = {"forward": bench_traces.timed(fwd, args.repeats, "cpu") / T}
            for name, make in RULES.items():
                rule = make()
                reps = 1 if name == "online" and H > 256 else args.repeats

                def grad(rule: Any = rule) -> None:
                    cg.gradient(rule, model, xs, ys, obj)

                ms[name] = bench_traces.timed(grad, reps, "cpu") / T
            f = ms["forward"]
            rows.append(
                f"| {cell} | {H} | {f:.3f} | {ms['bptt']:.3f} | {ms['reverse']:.3f} | "
                f"{ms['traces']:.3f} | {ms['online']:.3f} | {ms['engine']:.3f} | "
                f"{ms['bptt'] / f:.2f}x | {ms['reverse'] / f:.2f}x | {ms['traces'] / f:.2f}x | "
                f"{ms['online'] / f:.2f}x | {ms['engine'] / f:.2f}x |"
            )
            print(rows[-1], flush=True)


def memory(args: argparse.Namespace, rows: list[str]) -> None:
    lengths = [int(s) for s in args.lengths.split(",")]
    rows += [
        "",
        "### Peak memory (MiB above the inputs; one fresh process each; LIF, H = 128, B = 16)",
        "",
        "| T | " + " | ".join(["forward", "BPTT", "e-prop traces", "e-prop reverse"]) + " |",
        "|---|---|---|---|---|",
    ]
    for T in lengths:
        cells = []
        for rule in ("forward", "bptt", "traces", "reverse"):
            b = peak_memory("bench_eprop:setup", {"rule": rule, "T": T}, timeout=1800)
            cells.append(f"{b / 2**20:.1f}")
        rows.append(f"| {T} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="256,1024")
    ap.add_argument("--lengths", default="100,1000,10000")
    ap.add_argument("--wall", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--name", default="eprop", help="results/<name>.md")
    args = ap.parse_args()
    bench_traces.WALL = args.wall
    if not args.wall:
        torch.set_num_threads(1)
    rows: list[str] = []
    if not args.skip_timing:
        timing(args, rows)
    if not args.skip_memory:
        memory(args, rows)
    cmd = "python benchmarks/bench_eprop.py" + (" --skip-timing" if args.skip_timing else "")
    cmd += " --skip-memory" if args.skip_memory else ""
    write(args.name, "e-prop: time and memory (issue 5)", rows, cmd + f" --name {args.name}")


if __name__ == "__main__":
    main()
