"""The examples run end to end (FORCE has its own, shortened test in test_force_example.py;
quickstart.py is the README's quick start, which test_docs.py runs).

The timeout is generous: an example takes about 30 s on an idle 2-core machine, several times
that when the machine is busy; the test is about running to the end, not about speed.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("name", ["dale_rnn.py", "eligibility_traces.py"])
def test_example_runs(name, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip(), "an example should report what it did"
