"""What the machine allows: memory bandwidth and matmul throughput, measured here and now."""

from __future__ import annotations

import torch

from chronograd.bench.timing import median_ms


def bandwidth_gbs(
    device: torch.device | str = "cpu", mbytes: int = 256, dtype: torch.dtype = torch.float32
) -> float:
    """Streaming bandwidth in GB/s: an in-place ``a.mul_(s)`` reads and writes ``mbytes``.

    This is the floor for an update that reads and writes a tensor once (an eligibility trace).
    """
    n = mbytes * 2**20 // torch.tensor([], dtype=dtype).element_size()
    a = torch.ones(n, device=device, dtype=dtype)
    ms = median_ms(lambda: a.mul_(1.0000001), repeats=7, warmup=2, device=device)
    return 2 * a.numel() * a.element_size() / (ms * 1e-3) / 1e9


def matmul_gflops(
    device: torch.device | str = "cpu", n: int = 1024, dtype: torch.dtype = torch.float32
) -> float:
    """Dense ``n×n @ n×n`` throughput in GFLOP/s (the floor for matmul-bound steps)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = median_ms(lambda: a @ b, repeats=7, warmup=2, device=device)
    return 2 * n**3 / (ms * 1e-3) / 1e9
