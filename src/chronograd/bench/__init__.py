"""Measurement utilities shared by the benchmark scripts and ``chronograd bench``.

* :func:`median_ms` - median wall time of a callable (device-synchronised).
* :func:`bandwidth_gbs`, :func:`matmul_gflops` - the machine's floors, so a figure can be
  stated as a ratio to what the hardware allows.
* :func:`peak_memory` - peak memory of one call, measured in a fresh process.
* :func:`count_work` - matmul FLOPs and bytes touched by one call (for ratios to the floors).
"""

from chronograd.bench.floors import bandwidth_gbs, matmul_gflops
from chronograd.bench.memory import peak_memory
from chronograd.bench.timing import median_ms, sync
from chronograd.bench.work import Work, count_work

__all__ = [
    "Work",
    "bandwidth_gbs",
    "count_work",
    "matmul_gflops",
    "median_ms",
    "peak_memory",
    "sync",
]
