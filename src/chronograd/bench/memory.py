"""Peak memory of one call, measured in a fresh process.

Each measurement runs ``module:function(**kwargs)`` in its own Python process, so the peak of
one configuration cannot hide behind an earlier, larger one. On CUDA the figure is
``torch.cuda.max_memory_allocated``; on the CPU it is the peak resident set during the call
above the resident set just before it (imports and inputs built by ``setup`` excluded): on
Linux the kernel's high-water mark is reset before the call (``/proc/self/clear_refs``), so an
earlier, larger peak (imports) cannot hide it. There is no warm-up call on the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

_CHILD = r"""
import gc, importlib, json, resource, sys, torch

def status(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: reset the resident high-water mark (VmHWM) to the current RSS
        return True
    except OSError:
        return False

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
    gc.collect()
    base = status("VmRSS")
    if base is not None and reset_peak():
        run()
        peak = status("VmHWM") - base
    else:  # no /proc: the lifetime peak, which hides a call smaller than the import peak
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
