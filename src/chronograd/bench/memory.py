"""Peak memory of one call, measured in a fresh process.

Each measurement runs ``module:function(**kwargs)`` in its own Python process, so the peak of
one configuration cannot hide behind an earlier, larger one. One warm-up call runs first (lazy
initialisation, allocator pools, optimizer state). On CUDA the figure is then
``torch.cuda.max_memory_allocated`` above what was allocated before the measured call. On Linux
CPUs it is the peak resident set during the call above the resident set before it: the heap's
free memory is returned to the system (``malloc_trim``) and the high-water mark reset
(``/proc/self/clear_refs``) just before the call, so memory freed by ``setup`` or by the
warm-up cannot absorb the call's allocations. Elsewhere on the CPU (no ``clear_refs``) it is
the growth of ``ru_maxrss`` during a call made without warm-up, which misses allocations that
fit under an earlier peak (small configurations can read 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

_CHILD = r"""
import importlib, json, resource, sys, torch
spec = json.loads(sys.argv[1])
mod, _, fn = spec["target"].partition(":")
target = getattr(importlib.import_module(mod), fn)
dev = torch.device(spec["device"])
run = target(**spec["kwargs"])          # setup: builds the model and inputs, returns a callable
if dev.type == "cuda":
    run()                               # warm-up (allocator pools, lazy init)
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run(); torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
else:
    def status(key):                    # bytes, from /proc/self/status (Linux)
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith(key + ":")).split()[1]) * 1024
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                # resets the peak resident set (VmHWM) to the current one
        precise = True
    except OSError:
        precise = False
    if precise:
        run()                           # warm-up
        try:
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = status("VmRSS")
        run()
        peak = status("VmHWM") - base
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        run()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
print(json.dumps({"peak_bytes": int(peak)}))
"""


def peak_memory(
    target: str,
    kwargs: dict[str, Any] | None = None,
    *,
    device: str = "cpu",
    timeout: float = 600.0,
) -> int:
    """Peak extra memory (bytes) of one call in a fresh process.

    Args:
        target: ``"package.module:setup"``; ``setup(**kwargs)`` builds everything and returns a
            zero-argument callable, which is measured once (after one warm-up call, except on
            CPUs without ``/proc/self/clear_refs``).
        kwargs: JSON-serialisable arguments for ``setup``.
        device: ``"cpu"`` or a CUDA device.
    """
    spec = json.dumps({"target": target, "kwargs": kwargs or {}, "device": device})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, spec],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement of {target} failed:\n{out.stderr.strip()[-2000:]}")
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"])
