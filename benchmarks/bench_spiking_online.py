"""Issue 19 figures: OSTL, OTPE, OSTTP beside OTTT, SLTT, e-prop and BPTT on spiking digits.

Task: ``digits`` with ``encoding="spikes"`` (scikit-learn's 8×8 digits, every pixel a Poisson
channel, ``T = 25``, ``I = 64``, ten classes, cross-entropy on the last 5 steps; chance ≈ 0.1).
Two networks, built from the same seed for every rule:

* ``ff2``: ``Stack(LIF(64, 64, recurrent=False), LIF(64, 64, recurrent=False),
  LeakyReadout(64, 10, κ=0.8))`` (OTPE needs a feed-forward stack; e-prop takes one layer);
* ``rec1``: ``Stack(LIF(64, 64), LeakyReadout(64, 10, κ=0.8))`` (recurrent; OTPE refuses it).

For each rule: *alignment*, the cosine between its gradient and BPTT's over all parameters at
initialisation (one batch of 32, float64); *accuracy*, validation accuracy after ``--epochs``
epochs of Adam (lr 5e-3, 10 batches of 32 per epoch); *ms/seq*, median time of one training
sequence (forward, gradient, update); *memory*, peak extra memory of that call in a fresh
process (``chronograd.bench.peak_memory``), also at 4·T to show whether it grows with ``T``.
One CPU thread. Usage: ``python benchmarks/bench_spiking_online.py [--epochs 4]``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import torch

import chronograd as cg
from chronograd.bench import median_ms, peak_memory
from chronograd.cells import LIF, LeakyReadout, Stack

from _common import write

RULES: dict[str, Callable[[], cg.LearningRule]] = {
    "BPTT": cg.rules.BPTT,
    "OTTT": cg.rules.OTTT,
    "SLTT": cg.rules.SLTT,
    "e-prop": cg.rules.EProp,
    "OSTL": cg.rules.OSTL,
    "OSTL recurrent": lambda: cg.rules.OSTL(recurrent=True),
    "OTPE": cg.rules.OTPE,
    "OSTTP": cg.rules.OSTTP,
}
NETS = ("ff2", "rec1")


def task(steps: int = 25) -> cg.tasks.Task:
    return cg.tasks.get("digits", encoding="spikes", steps=steps, last=5, batch_size=32)


def model(net: str, seed: int = 0) -> Stack:
    torch.manual_seed(seed)
    if net == "ff2":
        return Stack(
            LIF(64, 64, recurrent=False, tau_mem=10.0, threshold=0.5),
            LIF(64, 64, recurrent=False, tau_mem=10.0, threshold=0.5),
            LeakyReadout(64, 10, kappa=0.8),
        )
    return Stack(LIF(64, 64, tau_mem=10.0, threshold=0.5), LeakyReadout(64, 10, kappa=0.8))


def supported(rule: cg.LearningRule, m: Stack) -> str | None:
    try:
        rule.check_model(m)
    except TypeError as e:
        return str(e).split(".")[0]
    return None


def alignment(name: str, net: str) -> float:
    t = task()
    xs, ys = t.batch(32, seed=1)
    m = model(net).double()
    ref = cg.gradient(cg.rules.BPTT(), m, xs.double(), ys, t.objective)
    got = cg.gradient(RULES[name](), m, xs.double(), ys, t.objective)
    a = torch.cat([ref[n].flatten() for n in ref])
    b = torch.cat([got[n].flatten() for n in ref])
    return float(a @ b / (a.norm() * b.norm() + 1e-30))


def train(name: str, net: str, epochs: int) -> float:
    t = task()
    m = model(net)
    trainer = cg.training.Trainer(m, RULES[name](), t.objective, lr=5e-3)
    trainer.fit([b for e in range(epochs) for b in t.train(e)], epochs=1)
    correct = total = 0.0
    for xs, ys in t.val():
        with torch.no_grad():
            out, _ = cg.unroll(m, xs)
        correct += t.metric(out, ys) * xs.shape[1]
        total += xs.shape[1]
    return correct / total


def setup(name: str, net: str, steps: int = 25) -> Callable[[], Any]:
    """One training sequence (forward, gradient, Adam step) as a callable."""
    torch.set_num_threads(1)
    t = task(steps)
    m = model(net)
    rule = RULES[name]()
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    xs, ys = t.batch(32, seed=2)

    def one() -> None:
        grads = cg.gradient(rule, m, xs, ys, t.objective)
        for n, p in m.named_parameters():
            p.grad = grads[n]
        opt.step()

    return one


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [
        "| net | rule | alignment with BPTT | val accuracy | ms/seq (T=25) | memory T=25 | "
        "memory T=100 |",
        "|---|---|---|---|---|---|---|",
    ]
    for net in NETS:
        base_ms = None
        for name in RULES:
            why = supported(RULES[name](), model(net))
            if why is not None:
                lines.append(f"| {net} | {name} | — ({why}) | | | | |")
                continue
            cos = alignment(name, net)
            acc = train(name, net, args.epochs)
            ms = median_ms(setup(name, net), repeats=args.repeats)
            base_ms = ms if name == "BPTT" else base_ms
            mem = [
                peak_memory("bench_spiking_online:setup", {"name": name, "net": net, "steps": s})
                / 2**20
                for s in (25, 100)
            ]
            ratio = "" if base_ms is None else f" ({ms / base_ms:.2f}x BPTT)"
            lines.append(
                f"| {net} | {name} | {cos:.3f} | {acc:.3f} | {ms:.1f}{ratio} | "
                f"{mem[0]:.1f} MiB | {mem[1]:.1f} MiB |"
            )
            print(lines[-1], flush=True)
            assert math.isfinite(cos)
    write(
        "spiking_online",
        "Spiking online rules on spiking digits (issue 19)",
        lines,
        f"python benchmarks/bench_spiking_online.py --epochs {args.epochs}",
    )


if __name__ == "__main__":
    main()
