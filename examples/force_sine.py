"""FORCE learning: a chaotic rate network learns a periodic signal online (Sussillo & Abbott 2009).

``N`` rate units with a random recurrent matrix of gain ``g = 1.5`` are chaotic. Their readout
``z = w · tanh(x)`` is fed back into the network. FORCE is RLS on the readout at every step
(``RLS(strategy="inputs")``): from the first update it keeps ``z`` close to the target, so the
feedback loop stays closed while the weights converge, until the network generates the target on
its own. The script shows the untrained (chaotic) output, trains online, lets the network run
freely, prints the normalised MSE ``mean((z − f)²) / var(f)`` of each phase and saves a plot.

    python examples/force_sine.py --hidden 300 --train-steps 3000 --out runs/force_sine.png
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from chronograd.cells import ChaoticRNN
from chronograd.objectives import Objective
from chronograd.rules import RLS
from chronograd.sequence import unroll
from chronograd.training import apply_to_model, run_sequence


def target(start: int, steps: int, period: float, dtype: torch.dtype) -> torch.Tensor:
    """A periodic target (two harmonics) over steps ``[start, start + steps)``: ``(T, 1, 1)``."""
    t = torch.arange(start, start + steps, dtype=dtype)
    w = 2 * math.pi / period
    return (torch.sin(w * t) + 0.5 * torch.sin(2 * w * t)).view(steps, 1, 1)


def nmse(output: torch.Tensor, reference: torch.Tensor) -> float:
    """Normalised mean squared error ``mean((z − f)²) / var(f)``."""
    return float(((output - reference) ** 2).mean() / reference.var())


def force_sine(
    hidden: int = 300,
    train_steps: int = 3000,
    test_steps: int = 500,
    period: float = 100.0,
    g: float = 1.5,
    delta: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    plot: str | Path | None = None,
) -> dict[str, float]:
    """Run the experiment; returns the NMSE before, during (last steps) and after training."""
    model = ChaoticRNN(1, hidden, 1, g=g, tau=10.0, dt=1.0, readout_scale=1.0, seed=seed)
    model = model.to(dtype)

    def zeros(n: int) -> torch.Tensor:  # the network runs without input: (n, 1, 1)
        return torch.zeros(n, 1, 1, dtype=dtype)

    with torch.no_grad():  # spontaneous activity with the untrained, random readout
        before, state = unroll(model, zeros(test_steps))
    f_before = target(0, test_steps, period, dtype)

    rule = RLS(strategy="inputs", delta=delta, chunk_size=1, params=("readout.weight",))
    f_train = target(test_steps, train_steps, period, dtype)
    run = run_sequence(
        rule, model, zeros(train_steps), f_train, Objective("mse"), state=state,
        apply=apply_to_model(model, None),  # RLS returns its weight changes; the driver adds them
    )  # fmt: skip

    with torch.no_grad():  # training is over: the network runs freely from where it is
        after, _ = unroll(model, zeros(test_steps), run.state)
    f_after = target(test_steps + train_steps, test_steps, period, dtype)

    result = {
        "nmse_before": nmse(before, f_before),
        "nmse_training": nmse(run.outputs[-test_steps:], f_train[-test_steps:]),
        "nmse_after": nmse(after, f_after),
    }
    if plot is not None:
        _plot(plot, before, f_before, run.outputs, f_train, after, f_after, test_steps, result)
    return result


def _plot(path, before, f_before, during, f_train, after, f_after, n, result) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharey=True)
    start = f_before.shape[0]
    panels = [
        (axes[0], 0, before, f_before, f"before training (NMSE {result['nmse_before']:.2f})"),
        (axes[1], start, during[:n], f_train[:n], "first steps of FORCE training"),
        (axes[2], start + f_train.shape[0], after, f_after,
         f"after training, running freely (NMSE {result['nmse_after']:.1e})"),
    ]  # fmt: skip
    for ax, t0, z, f, title in panels:
        steps = torch.arange(t0, t0 + z.shape[0])
        ax.plot(steps, f.flatten(), color="0.6", lw=3, label="target")
        ax.plot(steps, z.flatten(), color="C0", lw=1.2, label="output z")
        ax.set_title(title, fontsize=10)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=300)
    p.add_argument("--train-steps", type=int, default=3000)
    p.add_argument("--test-steps", type=int, default=500)
    p.add_argument("--period", type=float, default=100.0, help="target period in steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/force_sine.png", help="where to save the plot")
    args = p.parse_args()
    result = force_sine(
        args.hidden, args.train_steps, args.test_steps, args.period, seed=args.seed, plot=args.out
    )
    print(
        f"FORCE on a chaotic rate RNN (N={args.hidden}, g=1.5): normalised MSE "
        f"{result['nmse_before']:.3f} before training, {result['nmse_training']:.4f} at the end "
        f"of training, {result['nmse_after']:.4f} running freely after training. Plot: {args.out}"
    )


if __name__ == "__main__":
    main()
