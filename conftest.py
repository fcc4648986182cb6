"""Test this checkout's sources, whichever environment runs pytest (worktrees share one venv).

The package is installed in editable mode from one checkout; a second checkout (a git worktree)
running the same interpreter would otherwise import the first one's ``src``. Subprocesses the
tests start (``python -m chronograd ...``) inherit the path through ``PYTHONPATH``.
"""

import os
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parent / "src")
if sys.path[0] != SRC:
    sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
