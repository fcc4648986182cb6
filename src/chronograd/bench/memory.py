"""Peak memory of one call, measured in a fresh process.

Each measurement runs ``module:function(**kwargs)`` in its own Python process, so the peak of
one configuration cannot hide behind an earlier, larger one. On CUDA the figure is
``torch.cuda.max_memory_allocated``; on the CPU it is the growth of the process's peak resident
set during the call above what the process held before it (imports, inputs built by
``setup``); there is no warm-up call on the CPU, since it would raise the peak first. On Linux
the peak (``VmHWM``) is reset just before the call: a child process inherits its parent's
resident size as its initial ``ru_maxrss``, which hid every figure below the parent's size.
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
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))
    try:  # Linux: reset the high-water mark, which a child inherits from its parent's RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = status("VmRSS")
        run()
        peak = status("VmHWM") - base
    except OSError:
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
            zero-argument callable, which is measured once (after one warm-up call on CUDA).
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
