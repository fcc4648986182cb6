"""Online learning with eligibility traces: inspect the trace graph, compare rules, train.

A two-state spiking layer (synaptic current feeding the membrane) without recurrent weights and
a linear readout: D-RTRL is exact here, pp-prop approximates it, RTRL is the oracle.
Run: ``python examples/eligibility_traces.py`` (a few seconds on a laptop CPU).
"""

from __future__ import annotations

import torch

import chronograd as cg
from chronograd.cells import LeakyReadout, Stack, SynapticLIF
from chronograd.rules import DRTRL, RTRL, PPProp
from chronograd.testing import gradient_alignment
from chronograd.traces import compile_graph


def data(T: int = 60, B: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Poisson spikes on 8 channels; target: a low-passed difference of two channel groups."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, 8, generator=g) < 0.2).float()
    drive = x[..., :4].sum(-1) - x[..., 4:].sum(-1)  # (T, B)
    y = torch.zeros(T, B, 1)
    for t in range(1, T):
        y[t, :, 0] = 0.8 * y[t - 1, :, 0] + 0.1 * drive[t]
    return x, y


def main() -> None:
    torch.manual_seed(0)
    model = Stack(
        SynapticLIF(8, 32, recurrent=False, tau_mem=5.0, tau_syn=3.0, threshold=0.5),
        LeakyReadout(32, 1),
    )
    xs, ys = data()
    print(compile_graph(model, xs[0], model.init_state(xs.shape[1])))

    objective = cg.Objective("mse")
    reference = cg.gradient(RTRL(), model, xs[:20], ys[:20], objective)
    for rule in (DRTRL(), PPProp(decay=0.5)):
        a = gradient_alignment(rule, model, xs[:20], ys[:20], objective, reference=reference)
        print(f"{type(rule).__name__:7s} vs RTRL: cosine {a['all'].cosine:.4f}")

    trainer = cg.training.Trainer(model, DRTRL(chunk_size=20), objective, lr=1e-2, progress=False)
    history = trainer.fit(lambda epoch: [data(seed=epoch * 10 + i) for i in range(4)], epochs=5)
    print("loss per epoch:", [round(r["loss"], 4) for r in history.records])


if __name__ == "__main__":
    main()
