"""Issue 18 figures: SnAp-n's memory and time per step against RTRL and D-RTRL (and UORO,
KF-RTRL).

A tanh RNN (``LeakyRNN``, ``H`` units, 8 inputs) with a linear readout (``LeakyReadout``,
κ = 0, 2 outputs), B = 8, T = 20 steps per call, MSE at every step; one call = one gradient
(``cg.gradient``). *Carry* is what the rule keeps between steps (influence matrices, traces,
rank-1 factors), in bytes per sample, counted from the carry's tensors; *time* is the median
milliseconds per step. Usage: ``python benchmarks/snap_cost.py [--hidden 16,32] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

import chronograd as cg
from chronograd.cells import LeakyReadout, LeakyRNN, Stack
from chronograd.rules import DRTRL, KFRTRL, RTRL, UORO, Chunk, SnAp
from chronograd.sequence import Span

from _common import median_ms, write

B, T, I = 8, 20, 8
RULES = {
    "RTRL": RTRL,
    "SnAp-1": lambda: SnAp(n=1),
    "SnAp-2": lambda: SnAp(n=2),
    "D-RTRL": DRTRL,
    "UORO": UORO,
    "KF-RTRL": KFRTRL,
}


def carry_bytes(carry: object) -> int:
    """Bytes of the tensors held by a carry (lists, dicts, dataclasses of tensors)."""
    if isinstance(carry, torch.Tensor):
        return carry.numel() * carry.element_size()
    if isinstance(carry, (list, tuple)):
        return sum(carry_bytes(c) for c in carry)
    if isinstance(carry, dict):
        return sum(carry_bytes(c) for c in carry.values())
    if dataclasses.is_dataclass(carry):
        return sum(carry_bytes(getattr(carry, f.name)) for f in dataclasses.fields(carry))
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", default="16,32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lines = ["| H | params | rule | carry (bytes/sample) | time (ms/step) | vs RTRL |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for H in (int(h) for h in args.hidden.split(",")):
        torch.manual_seed(0)
        model = Stack(LeakyRNN(I, H), LeakyReadout(H, 2))
        P = sum(p.numel() for p in model.parameters())
        xs, ys = torch.randn(T, B, I), torch.randn(T, B, 2)
        obj = cg.Objective("mse")
        base = None
        for name, make in RULES.items():
            rule = make()
            state = model.init_state(B)
            step = rule.update(
                model, Chunk(xs, ys, Span(0, T, T)), state, rule.init(model, state), obj
            )
            size = carry_bytes(step.carry) // B
            ms = median_ms(lambda rule=rule: cg.gradient(rule, model, xs, ys, obj),
                           repeats=args.repeats) / T  # fmt: skip
            base = ms if name == "RTRL" else base
            lines.append(f"| {H} | {P} | {name} | {size} | {ms:.2f} | {ms / base:.2f}x |")
    write("snap_cost", "SnAp-n, UORO, KF-RTRL: carry and time per step against RTRL and D-RTRL",
          lines, "python benchmarks/snap_cost.py")  # fmt: skip


if __name__ == "__main__":
    main()
