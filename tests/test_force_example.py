"""The FORCE example (examples/force_sine.py) learns its target: a short, small version."""

import runpy
from pathlib import Path

import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "force_sine.py"


def test_force_learns_a_periodic_target_and_generates_it_alone(tmp_path):
    """A chaotic rate RNN (g = 1.5, 150 units) trained online with FORCE for 1500 steps runs
    freely afterwards with a normalised MSE below 0.05 (chaos before: far above)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        force_sine = runpy.run_path(str(EXAMPLE))["force_sine"]
        plot = tmp_path / "force.png"
        result = force_sine(hidden=150, train_steps=1500, test_steps=500, seed=1, plot=plot)
    finally:
        torch.set_num_threads(threads)
    assert result["nmse_before"] > 0.5
    assert result["nmse_training"] < 0.01
    assert result["nmse_after"] < 0.05
    assert plot.stat().st_size > 10_000
