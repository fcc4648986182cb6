"""Issue 4 figures: time per step and peak memory of the eligibility-trace rules.

1. ms per step of a bare forward (no grad), BPTT, pp-prop and D-RTRL for a leaky tanh RNN and a
   recurrent LIF layer (each with a linear readout), H in {64, 256, 1024}, B = 16, T steps
   (default 128, the cost of a whole sequence divided by T: per-sequence set-up included).
2. D-RTRL against the time to stream its trace tensors once (read + write) at the bandwidth
   measured by ``chronograd.bench.bandwidth_gbs`` in the same run; also with the engine's
   block of steps set to 1 (every weight trace updated every step, the textbook recursion).
3. Peak memory (``chronograd.bench.peak_memory``, one fresh process each) of pp-prop, D-RTRL
   and BPTT at T = 100, 1000, 10000 (H = 64 so that T = 10000 runs in reasonable time).
4. ``D``/``Df`` per step three ways: ``torch.func.vmap`` over forward-mode JVPs of the cut step
   (the textbook recipe), the engine's one-hot VJPs, and the closed form (LIF, H = 256).

Timing: this machine is shared (other jobs run beside the benchmark), so by default every
figure is the median *CPU time of this process* with one thread (``--wall`` measures the wall
clock with torch's default threads instead, as ``_common.median_ms`` does).

Usage: ``python benchmarks/bench_traces.py [--device cpu] [--steps 128] [--repeats 3] [--wall]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.func import jvp, vmap

import chronograd as cg
import chronograd.traces.chunk as trace_engine
from chronograd.bench import bandwidth_gbs, peak_memory
from chronograd.cells import LIF, LeakyReadout, LeakyRNN, Stack
from chronograd.rules import DRTRL, PPProp
from chronograd.traces import compile_graph, intercept_linears

from _common import median_ms, write

WALL = False


def timed(fn: Callable[[], object], repeats: int, device: str, warmup: int = 1) -> float:
    """Median ms of ``fn``: wall clock (``--wall``) or this process's CPU time (default)."""
    if WALL or device != "cpu":
        return median_ms(fn, repeats=repeats, warmup=warmup, device=torch.device(device))
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1e3)
    return statistics.median(times)


def build(cell: str, H: int, T: int, device: str, seed: int = 0) -> tuple[Any, Any, Any]:
    """``Stack(core(H, H), LeakyReadout(H, 10))`` and a seeded batch (B = 16)."""
    torch.manual_seed(seed)
    core = LIF(H, H, tau_mem=10.0) if cell == "lif" else LeakyRNN(H, H, alpha=0.5)
    model = Stack(core, LeakyReadout(H, 10)).to(device)
    B = 16
    xs = (
        (torch.rand(T, B, H, device=device) < 0.05).float()
        if cell == "lif"
        else torch.randn(T, B, H, device=device)
    )
    return model, xs, torch.randn(T, B, 10, device=device)


def rule_of(name: str) -> Any:
    return {"bptt": cg.BPTT(), "pp-prop": PPProp(decay=0.5), "drtrl": DRTRL()}[name]


def setup(cell: str, H: int, T: int, rule: str, device: str = "cpu") -> Any:
    """For ``peak_memory``: one gradient of ``rule`` over a ``T``-step sequence."""
    model, xs, ys = build(cell, H, T, device)
    obj = cg.Objective("mse")
    r = rule_of(rule)
    if rule != "bptt":
        r.check_model(model)  # compile the trace graph before measuring
    return lambda: cg.gradient(r, model, xs, ys, obj)


def setup_forward(cell: str, H: int, T: int, device: str = "cpu") -> Any:
    """For ``peak_memory``: the bare forward (no grad), outputs kept, over ``T`` steps."""
    model, xs, _ = build(cell, H, T, device)

    def run() -> Any:
        with torch.no_grad():
            return cg.unroll(model, xs)

    return run


def trace_bytes(model: Any, xs: Any) -> int:
    """Bytes of D-RTRL's traces (weight, bias and per-neuron) for this model and batch."""
    B = xs.shape[1]
    graph = compile_graph(model, xs[0], model.init_state(B, device=xs.device))
    total = 0
    for r in graph.relations:
        if r.group is None:
            continue
        S = graph.groups[r.group].S
        total += S * B * r.in_features * r.out_features + (S * B * r.out_features if r.bias else 0)
    return total * xs.element_size()


def timing(args: argparse.Namespace, rows: list[str]) -> dict[tuple[str, int], dict[str, float]]:
    T = args.steps
    out: dict[tuple[str, int], dict[str, float]] = {}
    rows += [
        f"### Time per step (B = 16, T = {T}, {torch.get_num_threads()} thread(s), "
        f"{'wall clock' if WALL else 'process CPU time'})",
        "",
        "| cell | H | forward ms | BPTT ms | pp-prop ms | D-RTRL ms | BPTT / fwd | pp-prop / fwd | D-RTRL / fwd |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in ("tanh", "lif"):
        for H in (64, 256, 1024):
            model, xs, ys = build(cell, H, T, args.device)
            obj = cg.Objective("mse")

            def forward() -> None:
                with torch.no_grad():
                    cg.unroll(model, xs)

            ms = {"forward": timed(forward, args.repeats, args.device) / T}
            for name in ("bptt", "pp-prop", "drtrl"):
                rule = rule_of(name)
                ms[name] = (
                    timed(lambda: cg.gradient(rule, model, xs, ys, obj), args.repeats, args.device)
                    / T
                )
            out[(cell, H)] = ms
            f = ms["forward"]
            rows.append(
                f"| {cell} | {H} | {f:.3f} | {ms['bptt']:.3f} | {ms['pp-prop']:.3f} | "
                f"{ms['drtrl']:.3f} | {ms['bptt'] / f:.2f}x | {ms['pp-prop'] / f:.2f}x | "
                f"{ms['drtrl'] / f:.2f}x |"
            )
    return out


def streaming(
    args: argparse.Namespace, rows: list[str], ms: dict[tuple[str, int], dict[str, float]]
) -> None:
    gbs = bandwidth_gbs(args.device)
    T = args.steps
    rows += [
        "",
        "### D-RTRL vs streaming its traces once (read + write) per step",
        "",
        f'`bandwidth_gbs` measured {gbs:.1f} GB/s (wall clock) in this run; "measured stream" is '
        "an in-place pass over tensors of the traces' sizes timed with the same clock as the "
        'rules. "block 1" runs the engine one step at a time, so every weight trace is '
        "updated every step (the textbook recursion; T = 32).",
        "",
        "| cell | H | trace MB | stream ms (bandwidth) | measured stream ms | D-RTRL ms/step | "
        "/ stream (bw) | / measured | block 1 ms/step | / measured |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in ("tanh", "lif"):
        for H in (256, 1024):
            model, xs, ys = build(cell, H, T, args.device)
            nbytes = trace_bytes(model, xs)
            stream = 2 * nbytes / (gbs * 1e9) * 1e3
            measured = stream_ms(
                nbytes // xs.element_size(), xs.dtype, max(args.repeats, 5), args.device
            )
            d = ms[(cell, H)]["drtrl"]
            saved = trace_engine.BLOCK
            trace_engine.BLOCK = 1
            try:
                rule = DRTRL()
                obj = cg.Objective("mse")
                d1 = (
                    timed(
                        lambda: cg.gradient(rule, model, xs[:32], ys[:32], obj),
                        args.repeats,
                        args.device,
                    )
                    / 32
                )
            finally:
                trace_engine.BLOCK = saved
            rows.append(
                f"| {cell} | {H} | {nbytes / 2**20:.1f} | {stream:.3f} | {measured:.3f} | {d:.3f} | "
                f"{d / stream:.2f}x | {d / measured:.2f}x | {d1:.3f} | {d1 / measured:.2f}x |"
            )


def stream_ms(numel: int, dtype: torch.dtype, repeats: int, device: str) -> float:
    """One in-place read + write pass over ``numel`` elements, timed like the rules."""
    buf = torch.ones(numel, device=device, dtype=dtype)
    return timed(lambda: buf.mul_(1.0000001), repeats, device)


def memory(args: argparse.Namespace, rows: list[str]) -> None:
    rows += [
        "",
        "### Peak memory (MB above the process's baseline; LIF, H = 64, B = 16, one process each)",
        "",
        "Measured twice: with glibc's default allocator, and with `MALLOC_MMAP_THRESHOLD_=16384` "
        "(blocks of 16 KiB and more are mapped, so freed memory goes back to the system and the "
        "resident size follows the live tensors instead of the heap's fragmentation).",
        "",
        "| rule | allocator | T = 100 | T = 1000 | T = 10000 |",
        "|---|---|---|---|---|",
    ]
    growth: dict[tuple[str, bool], float] = {}
    for mmap in (False, True):
        saved = os.environ.get("MALLOC_MMAP_THRESHOLD_")
        if mmap:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = "16384"
        try:
            for rule in ("forward (no grad)", "pp-prop", "drtrl", "bptt"):
                peaks = []
                for T in (100, 1000, 10000):
                    spec = {"cell": "lif", "H": 64, "T": T, "device": args.device}
                    if rule.startswith("forward"):
                        b = peak_memory("bench_traces:setup_forward", spec, device=args.device)
                    else:
                        b = peak_memory(
                            "bench_traces:setup", {**spec, "rule": rule}, device=args.device
                        )
                    peaks.append(b)
                growth[(rule, mmap)] = (peaks[2] - peaks[1]) / 9000
                where = "mmap >= 16 KiB" if mmap else "default"
                rows.append(
                    f"| {rule} | {where} | " + " | ".join(f"{b / 2**20:.1f}" for b in peaks) + " |"
                )
        finally:
            if mmap:
                if saved is None:
                    os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
                else:
                    os.environ["MALLOC_MMAP_THRESHOLD_"] = saved
    per = {k: f"{v / 1024:.1f} KB" for k, v in growth.items()}
    rows += [
        "",
        "Growth per step between T = 1000 and T = 10000: D-RTRL "
        f"{per[('drtrl', False)]} (default) / {per[('drtrl', True)]} (mapped), pp-prop "
        f"{per[('pp-prop', False)]} / {per[('pp-prop', True)]}, BPTT {per[('bptt', False)]} / "
        f"{per[('bptt', True)]}. The traces of pp-prop and D-RTRL do not grow with T: what grows "
        f"is the (T, B, O) outputs every rule returns ({16 * 10 * 4 / 1024:.1f} KB per step and "
        "copy here: B = 16, O = 10, float32; the chunk "
        "and sequence drivers each concatenate them) and the (T, B) loss weights, plus, with the "
        "default allocator, the heap's fragmentation. The bare forward grows with its hoisted "
        "(T, B, H) input map; BPTT keeps every step's activations.",
    ]


def jacobian_paths(args: argparse.Namespace, rows: list[str]) -> None:
    """D/Df of one LIF step, H = 256, B = 16: vmap(jvp) vs the engine (VJP, closed form)."""
    H, B = 256, 16
    model, xs, _ = build("lif", H, 2, args.device)
    cell = model.layers[0]
    params = dict(cell.named_parameters())
    v = torch.rand(B, H, device=args.device) * 2
    u = cell.input_map(xs[0])
    with torch.no_grad(), intercept_linears(params) as rec:
        cell.step(u, cg.cells.LIFState(v))
    y_rec = cg.traces.relation_output(rec.calls[0], params[rec.calls[0].weight]).detach()

    def cut(v: torch.Tensor, y_in: torch.Tensor, y_rec: torch.Tensor) -> torch.Tensor:
        with intercept_linears(params, lambda call, default: y_rec):
            return cell.step(y_in, cg.cells.LIFState(v))[1].v

    tangents = (torch.stack([torch.ones_like(v), torch.zeros_like(v), torch.zeros_like(v)]),
                torch.stack([torch.zeros_like(v), torch.ones_like(v), torch.zeros_like(v)]),
                torch.stack([torch.zeros_like(v), torch.zeros_like(v), torch.ones_like(v)]))  # fmt: skip

    def by_jvp() -> None:
        vmap(lambda a, b, c: jvp(cut, (v, u.detach(), y_rec), (a, b, c))[1])(*tangents)

    def by_vjp() -> None:
        vv, yi, yr = (t.detach().requires_grad_(True) for t in (v, u, y_rec))
        new = cut(vv, yi, yr)
        torch.autograd.grad(new, (vv, yi, yr), torch.ones_like(new))

    graph = compile_graph(model, xs[0], model.init_state(B, device=args.device))
    chunk = graph.prepare(xs[:1])
    state = (cg.cells.LIFState(v), model.init_state(B, device=args.device)[1])

    def engine() -> None:
        graph.run(chunk, 0, 1, state)

    a = timed(by_jvp, 7, args.device, warmup=2)
    b = timed(by_vjp, 7, args.device, warmup=2)
    c = timed(engine, 7, args.device, warmup=2)
    rows += [
        "",
        "### D and Df of one LIF step (H = 256, B = 16)",
        "",
        "| method | ms |",
        "|---|---|",
        f"| vmap over 3 forward-mode JVPs of the cut step | {a:.3f} |",
        f"| one-hot VJP of the cut step (the engine's autodiff path) | {b:.3f} |",
        f"| a whole engine step with the closed form (forward included) | {c:.3f} |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--wall", action="store_true", help="wall clock, default threads")
    args = ap.parse_args()
    global WALL
    WALL = args.wall
    if args.threads or not args.wall:
        torch.set_num_threads(args.threads or 1)
    rows: list[str] = []
    ms = timing(args, rows)
    streaming(args, rows, ms)
    jacobian_paths(args, rows)
    if not args.skip_memory:
        memory(args, rows)
    write("traces", "Eligibility-trace rules: time and memory (issue 4)", rows,
          "python benchmarks/bench_traces.py")  # fmt: skip


if __name__ == "__main__":
    main()
