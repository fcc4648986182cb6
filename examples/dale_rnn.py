"""Train an excitatory/inhibitory rate RNN that obeys Dale's law at every update.

Hard constraints (Dale projection, no autapses) hold after each TBPTT update; an L2 penalty
and a soft Dale hinge on the input weights go through the objective; the progress bar shows
the penalties, the excitatory/inhibitory fractions and the sign violations.

Run: ``python examples/dale_rnn.py`` (a few seconds on 2 CPU cores).
"""

import torch

import chronograd as cg
from chronograd.cells import LeakyReadout, LeakyRNN, Stack
from chronograd.constraints import DaleProjection, NoAutapses
from chronograd.dale import dale_recurrent, dale_reference, neuron_signs
from chronograd.regularizers import L2, DaleHinge
from chronograd.training import Trainer, dale_metrics, regularizer_metrics

H, T, B = 64, 50, 32


def batches(epoch: int, n: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Integrate two noisy input channels: y_t = 0.1 · Σ_{s≤t} x_s."""
    g = torch.Generator().manual_seed(epoch)
    out = []
    for _ in range(n):
        x = torch.randn(T, B, 2, generator=g)
        out.append((x, 0.1 * x.cumsum(0)))
    return out


def main() -> None:
    torch.manual_seed(0)
    model = Stack(LeakyRNN(2, H, alpha=0.8), LeakyReadout(H, 2))
    rec = model.layers[0].recurrent  # nn.Linear: weight is (post, pre), so pre_dim=1
    signs = neuron_signs(H, inh_ratio=0.2, seed=0)  # the signs dale_recurrent(seed=0) uses
    with torch.no_grad():
        rec.weight.copy_(dale_recurrent(H, pre_dim=1, spectral_radius=0.9, seed=0))

    w_in = model.layers[0].input.weight  # (H, 2): the two inputs are excitatory (soft)
    l2 = L2(model.named_parameters(), Lambda=1e-4)
    hinge = DaleHinge({"input": w_in}, [dale_reference((H, 2), pre_dim=1, inh_ratio=0.0)])
    constraints = [DaleProjection(rec.weight, signs, pre_dim=1), NoAutapses(rec.weight)]
    metrics = {
        **regularizer_metrics(l2, hinge),
        **dale_metrics(rec.weight, signs, pre_dim=1, name="rec"),
    }
    trainer = Trainer(
        model,
        cg.TBPTT(chunk_size=25),
        cg.Objective("mse", regularizers=[l2, hinge]),
        lr=3e-3,
        constraints=constraints,
        metrics=metrics,
        progress=True,
    )
    history = trainer.fit(batches, epochs=5, val=lambda e: batches(1000, n=2))
    print(f"val loss {history['val_loss'][0]:.4f} -> {history.last('val_loss'):.4f}")
    print(f"recurrent sign violations: {history.last('val_rec_sign_violations'):.0f}")
    print(f"input weights violating their sign: {history.last('val_DaleHinge_violations'):.0f}")
    print(f"spectral radius now {cg.dale.spectral_radius(rec.weight):.3f}")


if __name__ == "__main__":
    main()
