"""Shared benchmark helpers: median timing, machine description, result files.

Benchmarks are scripts run on demand (never tests, never asserting on time). Each prints a
table of medians and of ratios measured in the same run, and writes it to
``benchmarks/results/<name>.md`` with the machine it ran on.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(
    fn: Callable[[], object],
    *,
    repeats: int = 5,
    warmup: int = 1,
    device: torch.device | None = None,
) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` runs after ``warmup``."""
    dev = device or torch.device("cpu")
    for _ in range(warmup):
        fn()
        sync(dev)
    times = []
    for _ in range(repeats):
        gc.collect()
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}"
    )


def write(name: str, title: str, lines: list[str], command: str) -> Path:
    """Print ``lines`` and write them with a header to ``results/<name>.md``."""
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    stamp = time.strftime("%Y-%m-%d %H:%M")
    path.write_text(
        f"# {title}\n\nMeasured {stamp} on {machine()}.\nReproduce: `{command}`\n\n{text}\n"
    )
    return path
