"""Learning benchmark: pattern generation (Bellec et al. 2020; the reference code's first tutorial).

100 recurrent LIF neurons (``τ_m = 30``, ``v_th = 0.6``) and a leaky readout (``τ_out = 30``;
durations times ``--time-scale``) learn to produce a fixed sum of four sines from a frozen
Poisson input (chronograd's ``pattern`` task, 1 output), batch 1, Adam. Rules: random e-prop
(``xavier_normal`` feedback), symmetric e-prop, and BPTT on the same network; e-prop with the
firing-rate regularizer towards 10 Hz (coefficient ``--rate-reg``), as the reference tutorial.
The normalised MSE (``MSE / Var(y*)``; 1 = predicting the mean) is measured every
``--validate-every`` iterations.

Writes ``benchmarks/results/eprop_pattern.{md,json,png}``. Usage:
``python benchmarks/learn_eprop_pattern.py [--time-scale 0.1] [--iterations 1000]``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import torch

import chronograd as cg
from chronograd.cells import LIF, LeakyReadout, Stack
from chronograd.rules import BPTT, EProp
from chronograd.training import Event, Trainer

from _common import RESULTS, write

LABELS = {"random": "random e-prop", "symmetric": "symmetric e-prop", "bptt": "BPTT"}


def make_rule(name: str, args: argparse.Namespace) -> Any:
    if name == "bptt":
        return BPTT()
    return EProp(feedback=name, rate_target=0.01 / args.time_scale, rate_reg=args.rate_reg)


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    ts = args.time_scale
    task = cg.tasks.get("pattern", time_scale=ts, batches_per_epoch=args.validate_every,
                        seed=args.seed)  # fmt: skip
    torch.manual_seed(args.seed)
    tau = 30.0 * ts
    model = Stack(LIF(task.input_size, 100, tau_mem=tau, threshold=0.6),
                  LeakyReadout(100, task.output_size, kappa=math.exp(-1.0 / tau)))  # fmt: skip
    trainer = Trainer(model, make_rule(name, args), task.objective, lr=args.lr,
                      metrics={"nmse": task.metric}, progress=False)  # fmt: skip
    curve: list[tuple[int, float]] = []

    def record(t: Trainer) -> None:
        curve.append((t.state.iteration, t.history.last("val_nmse")))
        if t.state.iteration % (10 * args.validate_every) == 0:
            print(f"  {name} it {t.state.iteration:5d}  nmse {curve[-1][1]:.4f}", flush=True)

    trainer.add_handler(Event.EPOCH_COMPLETED, record)
    t0 = time.perf_counter()
    trainer.fit(task.train, epochs=math.ceil(args.iterations / args.validate_every), val=task.val)
    wall = time.perf_counter() - t0
    return {"curve": curve, "wall_s": wall, "iterations": trainer.state.iteration,
            "final": curve[-1][1], "best": min(e for _, e in curve)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--time-scale", type=float, default=0.1)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--validate-every", type=int, default=10)
    ap.add_argument("--rules", default="random,symmetric,bptt")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--rate-reg", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="eprop_pattern")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {r: run(r, args) for r in args.rules.split(",")}
    T = cg.tasks.get("pattern", time_scale=args.time_scale).seq_len
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"args": vars(args), **results}))
    plot(results, args, T)
    rows = [
        f"Pattern generation, T = {T} steps (time_scale = {args.time_scale}), 100 LIF, 1 output, "
        f"batch 1, Adam lr {args.lr}, e-prop rate regularizer {args.rate_reg} towards 10 Hz, "
        f"{args.threads} torch thread(s), seed {args.seed}. Normalised MSE (1 = the target's "
        f"mean) every {args.validate_every} iterations.",
        "",
        "| rule | iterations | NMSE at 10% of the run | final NMSE | best NMSE | wall time |",
        "|---|---|---|---|---|---|",
    ]
    for r, res in results.items():
        early = res["curve"][max(0, len(res["curve"]) // 10 - 1)][1]
        rows.append(
            f"| {LABELS[r]} | {res['iterations']} | {early:.3f} | {res['final']:.3f} | "
            f"{res['best']:.3f} | {res['wall_s'] / 60:.1f} min |"
        )
    rows += ["", f"![curves]({args.name}.png)", ""]
    cmd = f"python benchmarks/learn_eprop_pattern.py --time-scale {args.time_scale}"
    write(args.name, "e-prop learning: pattern generation", rows, cmd)


def plot(results: dict[str, Any], args: argparse.Namespace, T: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r, res in results.items():
        its, errs = zip(*res["curve"], strict=True)
        ax.plot(its, errs, label=LABELS[r])
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("normalised MSE")
    ax.set_title(f"Pattern generation, T = {T}, 100 LIF")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.name}.png", dpi=120)


if __name__ == "__main__":
    main()
