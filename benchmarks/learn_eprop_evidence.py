"""Learning benchmark: evidence accumulation (Bellec et al. 2020, Fig. 3) with random e-prop.

An LSNN of 50 LIF + 50 ALIF neurons (``τ_m = 20``, ``τ_a = 2000``, ``v_th = 0.6``, e-prop's
``β`` heuristic, readout ``τ_out = 20``; durations times ``--time-scale``), batch 32, Adam,
trained with random e-prop (feedback ``B ~ N(0, 1)`` and a firing-rate regularizer towards
10 Hz, as in the reference code) and, for comparison, with BPTT on the same network (no rate
regularizer: chronograd's objectives regularize parameters, not activity). Every
``--validate-every`` iterations the recall error is measured on 4 fixed validation batches
(128 trials); the first iteration where it is below the paper's 7% criterion and stays below it
on 8 more batches (256 trials; the reference code's stopping rule) is reported, and training
goes on to ``--iterations`` (``--stop`` ends it there, as the reference code does). The final
error is measured on 16 test batches (512 trials) never seen in training or validation. One run
per seed in ``--seeds``. The reference code has a 5 ms refractory period and batch 64;
chronograd's neurons have none and the issue asks for batch 32.

Writes ``benchmarks/results/eprop_evidence.{md,json,png}``. Usage:
``python benchmarks/learn_eprop_evidence.py [--time-scale 0.1] [--iterations 1000]
[--seeds 0,1,2] [--rules eprop,bptt] [--lr-decay 1.0] [--threads 2] [--stop] [--name N]``
(``--lr-decay``: learning-rate factor per 100 iterations; 1, constant, as the reference code).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import torch

import chronograd as cg
from chronograd.models import build_model
from chronograd.rules import BPTT, EProp
from chronograd.training import Event, Trainer

from _common import RESULTS, write


def make_rule(name: str, args: argparse.Namespace) -> Any:
    if name == "bptt":
        return BPTT()
    # the reference code's regularizer: rate_reg (f̄ - 10 Hz)², per step of dt = time_scale ms;
    # its feedback: B ~ N(0, 1), not norm-clipped
    return EProp(feedback="random", feedback_init=args.feedback_init, feedback_norm_clip=math.inf,
                 rate_target=0.01 / args.time_scale, rate_reg=1.0)  # fmt: skip


def run(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    ts = args.time_scale
    task = cg.tasks.get("evidence", time_scale=ts, batch_size=32,
                        batches_per_epoch=args.validate_every, val_batches=4, seed=seed)  # fmt: skip
    s = task.suggested
    torch.manual_seed(seed)
    model = build_model("lsnn", task.input_size, task.output_size, 100, tau_mem=s["tau_mem"],
                        tau_adapt=s["tau_adapt"], tau_out=s["tau_out"], threshold=0.6)  # fmt: skip
    rule = make_rule(name, args)
    # --lr-decay: factor per 100 iterations (epochs are --validate-every iterations)
    gamma = args.lr_decay ** (args.validate_every / 100)
    trainer = Trainer(model, rule, task.objective, lr=args.lr, metrics={"err": task.metric}, progress=False,
                      scheduler=lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma))  # fmt: skip
    curve: list[tuple[int, float]] = []
    state = {"hit": None}

    def check(t: Trainer) -> None:
        it = t.state.iteration
        err = t.history.last("val_err")
        curve.append((it, err))
        print(f"  {name} seed {seed} it {it:5d}  val recall error {err:.3f}  loss {t.history.last('loss'):.3f}",
              flush=True)  # fmt: skip
        if err < 0.07 and state["hit"] is None:
            more = [task.batch(32, seed=10_000 + it * 8 + k) for k in range(8)]
            errs = t.evaluate(more)["err"]
            if errs < 0.07:
                state["hit"] = it
                if args.stop:
                    t.terminate()

    trainer.add_handler(Event.EPOCH_COMPLETED, check)
    t0 = time.perf_counter()
    trainer.fit(task.train, epochs=math.ceil(args.iterations / args.validate_every), val=task.val)
    wall = time.perf_counter() - t0
    test = [task.batch(32, seed=50_000 + k) for k in range(16)]  # seeds no other batch uses
    final = trainer.evaluate(test)["err"]
    return {"curve": curve, "hit": state["hit"], "test_error": final, "wall_s": wall,
            "iterations": trainer.state.iteration}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--time-scale", type=float, default=0.1)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--validate-every", type=int, default=10)
    ap.add_argument("--rules", default="eprop,bptt")
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--lr-decay", type=float, default=1.0, help="factor per 100 iterations")
    ap.add_argument("--feedback-init", default="randn")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--stop", action="store_true", help="stop at the criterion")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="eprop_evidence")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(x) for x in args.seeds.split(",")]
    results: dict[str, Any] = {}
    for r in args.rules.split(","):
        for sd in seeds:
            results[f"{r}:{sd}"] = run(r, sd, args)
            report(results, args)  # after every run: an interrupted benchmark keeps what it did


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    T = cg.tasks.get("evidence", time_scale=args.time_scale).seq_len
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"args": vars(args), **results}))
    plot(results, args, T)
    rows = [
        f"Evidence accumulation, T = {T} steps (time_scale = {args.time_scale}), 50 LIF + 50 "
        f"ALIF, batch 32, Adam lr {args.lr}"
        + (f" times {args.lr_decay} every 100 iterations" if args.lr_decay != 1 else "")
        + f", {args.threads} torch thread(s). "
        "Recall error on 128 validation trials every "
        f"{args.validate_every} iterations; the criterion is met when it is < 7% and stays "
        f"< 7% on 256 more trials; {'training stops there' if args.stop else 'training goes on'}; "
        "final error on 512 test trials.",
        "",
        "| rule | seed | iterations to < 7% | iterations run | final test error | wall time | s / iteration |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, res in results.items():
        r, sd = key.split(":")
        hit = res["hit"] if res["hit"] is not None else f"not within {res['iterations']}"
        rows.append(
            f"| {'random e-prop' if r == 'eprop' else r} | {sd} | {hit} | {res['iterations']} | "
            f"{res['test_error']:.3f} | {res['wall_s'] / 60:.1f} min | "
            f"{res['wall_s'] / res['iterations']:.3f} |"
        )
    rows += ["", f"![curves]({args.name}.png)", ""]
    cmd = (f"python benchmarks/learn_eprop_evidence.py --time-scale {args.time_scale} "
           f"--iterations {args.iterations} --seeds {args.seeds} --rules {args.rules} "
           f"--lr-decay {args.lr_decay} --name {args.name}" + (" --stop" if args.stop else ""))  # fmt: skip
    write(args.name, "e-prop learning: evidence accumulation", rows, cmd)


def plot(results: dict[str, Any], args: argparse.Namespace, T: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    colors = {"eprop": "C0", "bptt": "C1"}
    for key, res in results.items():
        r, sd = key.split(":")
        its, errs = zip(*res["curve"], strict=True)
        label = (
            ("random e-prop" if r == "eprop" else r.upper())
            if sd == args.seeds.split(",")[0]
            else None
        )
        ax.plot(its, errs, color=colors.get(r), alpha=0.8, lw=1, label=label)
    ax.axhline(0.07, color="grey", ls="--", lw=0.8, label="7% criterion")
    ax.axhline(0.5, color="grey", ls=":", lw=0.8, label="chance")
    ax.set_xlabel("iteration (batch of 32)")
    ax.set_ylabel("validation recall error")
    ax.set_title(f"Evidence accumulation, T = {T}, LSNN 50 + 50")
    ax.set_ylim(0, 0.6)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.name}.png", dpi=120)


if __name__ == "__main__":
    main()
