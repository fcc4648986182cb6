"""Hand computations for the layered spiking rules (OSTL, OTPE, OSTTP): the network
``Stack(LIF, LIF, LeakyReadout)`` unrolled step by step from its weights, element by element,
with ``mse`` summed (``ℓ_t = Σ_b mean_o (y − y*)²``, so ``∂ℓ_t/∂y_t = 2 (y − y*) / O``)."""

import torch

from chronograd.cells import LIF, LeakyReadout, Stack

D = torch.float64


def two_layer(detach_reset=True, kappa=0.5, recurrent=False, seed=0):
    torch.manual_seed(seed)
    model = Stack(
        LIF(2, 3, recurrent=recurrent, tau_mem=3.0, threshold=0.4, bias=True,
            detach_reset=detach_reset),
        LIF(3, 2, recurrent=False, tau_mem=2.0, threshold=0.3, detach_reset=detach_reset),
        LeakyReadout(2, 2, kappa=kappa),
    ).double()  # fmt: skip
    with torch.no_grad():
        model.layers[1].input.weight.mul_(2.0)
    xs = torch.rand(4, 2, 2, dtype=D) * 2
    ys = torch.randn(4, 2, 2, dtype=D)
    return model, xs, ys


def forward(model, xs, ys):
    """Per step: inputs, spikes, ψ of both layers and ``∂ℓ_t/∂y_t``, computed by hand."""
    l1, l2, ro = model.layers
    W1, b1, W2 = l1.input.weight.detach(), l1.input.bias.detach(), l2.input.weight.detach()
    Wo, bo = ro.input.weight.detach(), ro.input.bias.detach()
    R1 = l1.recurrent.weight.detach() if l1.recurrent is not None else torch.zeros(3, 3, dtype=D)
    T, B, _ = xs.shape
    v1, v2 = torch.zeros(B, 3, dtype=D), torch.zeros(B, 2, dtype=D)
    z1, z2 = torch.zeros(B, 3, dtype=D), torch.zeros(B, 2, dtype=D)
    y = torch.zeros(B, 2, dtype=D)
    steps = []

    def psi(layer, v):
        th = layer.threshold
        return layer.surrogate.derivative((v - th) / th) / th

    for t in range(T):
        rec = {"x": xs[t], "z1p": z1, "z2p": z2, "psi1p": psi(l1, v1), "psi2p": psi(l2, v2)}
        v1 = float(l1.alpha) * v1 + xs[t] @ W1.T + b1 + z1 @ R1.T - l1.threshold * z1
        z1 = (v1 > l1.threshold).to(D)
        v2 = float(l2.alpha) * v2 + z1 @ W2.T - l2.threshold * z2
        z2 = (v2 > l2.threshold).to(D)
        y = ro.kappa * y + z2 @ Wo.T + bo
        rec.update(z1=z1, z2=z2, psi1=psi(l1, v1), psi2=psi(l2, v2), y=y,
                   gy=2 * (y - ys[t]) / y.shape[1])  # fmt: skip
        steps.append(rec)
    return steps


def readout_grads(model, steps):
    """The readout's exact gradient, ``Σ_t gy_tᵀ Σ_τ κ^{t-τ} z_τ`` and ``Σ_t gy_t Σ_τ κ^{t-τ}``."""
    kappa = model.layers[2].kappa
    gW = torch.zeros(2, 2, dtype=D)
    gb = torch.zeros(2, dtype=D)
    zh, c = 0.0, 0.0
    for s in steps:
        zh, c = kappa * zh + s["z2"], kappa * c + 1.0
        gW += s["gy"].T @ zh
        gb += s["gy"].sum(0) * c
    return gW, gb
