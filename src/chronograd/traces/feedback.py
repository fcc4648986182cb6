"""e-prop's feedback matrix ``B`` (H, O): how the readout's errors reach the hidden neurons.

The learning signal of hidden neuron ``j`` is ``L_{j,t} = Σ_k B_{jk} ∂ℓ_t/∂y_{k,t}``
(Bellec et al. 2020, eq. 4 and Methods). Three kinds of ``B``:

* ``symmetric``: ``B = W_outᵀ``, read from the readout at every update (the gradient's own
  feedback; no state).
* ``random``: a fixed matrix drawn once from a seeded generator and kept for the whole
  training (broadcast from rank 0 in distributed runs, saved in checkpoints). The generators
  are NeuroTorch's (seed 000), each followed by a Frobenius-norm clip ``B ← B · min(1, c/‖B‖)``
  whose default ``c`` is NeuroTorch's ``DEFAULT_FEEDBACKS_STR_NORM_CLIP_VALUE``:

  ================  ===========================================================  ========
  generator         ``B`` (H, O), read as a map from the ``O`` errors to ``H``    clip ``c``
  ================  ===========================================================  ========
  ``xavier_normal``  ``N(0, 2/(H + O))``                                          ∞
  ``kaiming_normal`` ``N(0, 2/O)`` (fan-in ``O``, leaky-ReLU gain with ``a = 0``)  ∞
  ``orthogonal``     orthonormal columns (QR of a normal matrix, ``H ≥ O``)        ∞
  ``unitary``        ``U Vᵀ`` of the SVD of a standard normal matrix (all singular  ∞
                     values 1: its orthogonal polar factor)
  ``randn``          ``N(0, 1)`` (the reference code's ``rd.randn``)                1
  ``rand``           ``U(0, 1)``                                                   1
  ``ones``           all ones                                                      1
  ================  ===========================================================  ========

  Every draw uses its own ``torch.Generator`` seeded with ``seed``, in float64 on the CPU, then
  moves to the model's device and dtype: the same seed gives the same ``B`` everywhere.
* ``adaptive`` (Bellec et al. 2020, "adaptive e-prop", after Kolen & Pollack 1994): ``B``
  starts as a random draw and receives, after every applied update, the same change as
  ``W_outᵀ``: ``B ← B + (W_out^new − W_out^old)ᵀ − decay · B``. With the same decay applied to
  ``W_out`` (e.g. ``AdamW(weight_decay=wd)`` and ``decay = lr · wd``), ``W_outᵀ − B`` shrinks
  by ``(1 − decay)`` at every update, so ``B`` aligns with ``W_outᵀ`` over training.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

GENERATORS = ("xavier_normal", "kaiming_normal", "orthogonal", "unitary", "randn", "rand", "ones")
NORM_CLIP: dict[str, float] = {
    "xavier_normal": math.inf,
    "kaiming_normal": math.inf,
    "orthogonal": math.inf,
    "unitary": math.inf,
    "randn": 1.0,
    "rand": 1.0,
    "ones": 1.0,
}
FEEDBACKS = ("symmetric", "random", "adaptive")


def check_generator(name: object) -> str:
    """Return ``name`` if it is a known feedback generator, else raise ``ValueError``."""
    if name not in GENERATORS:
        raise ValueError(
            f"unknown feedback generator {name!r}; expected one of {', '.join(GENERATORS)}"
        )
    return str(name)


def draw(hidden: int, outputs: int, generator: str, seed: int) -> Tensor:
    """A raw ``(hidden, outputs)`` float64 draw of ``generator`` (no norm clip)."""
    g = torch.Generator().manual_seed(int(seed))
    shape = (hidden, outputs)
    empty = torch.empty(shape, dtype=torch.float64)
    if generator == "xavier_normal":
        return nn.init.xavier_normal_(empty, generator=g)
    if generator == "kaiming_normal":
        return nn.init.kaiming_normal_(empty, generator=g)  # fan_in = outputs (dim 1)
    if generator == "orthogonal":
        return nn.init.orthogonal_(empty, generator=g)
    if generator == "unitary":
        a = torch.randn(shape, generator=g, dtype=torch.float64)
        u, _, vh = torch.linalg.svd(a, full_matrices=False)
        return u @ vh
    if generator == "randn":
        return torch.randn(shape, generator=g, dtype=torch.float64)
    if generator == "rand":
        return torch.rand(shape, generator=g, dtype=torch.float64)
    if generator == "ones":
        return torch.ones(shape, dtype=torch.float64)
    raise ValueError(f"unknown feedback generator {generator!r}")  # checked by the rule


def clip_norm(b: Tensor, max_norm: float) -> Tensor:
    """``B · min(1, max_norm / ‖B‖_F)``."""
    norm = float(torch.linalg.vector_norm(b))
    return b * (max_norm / norm) if norm > max_norm else b


def random_feedback(
    hidden: int,
    outputs: int,
    generator: str = "xavier_normal",
    *,
    seed: int = 0,
    norm_clip: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """A seeded feedback matrix ``B`` of shape ``(hidden, outputs)`` (see the module docstring).

    Args:
        hidden, outputs: ``H`` and ``O``.
        generator: one of :data:`GENERATORS`.
        seed: the generator's seed.
        norm_clip: Frobenius-norm bound (``None``: the generator's default, :data:`NORM_CLIP`).
        device, dtype: where the result goes.
    """
    generator = check_generator(generator)
    clip = NORM_CLIP[generator] if norm_clip is None else float(norm_clip)
    b = clip_norm(draw(hidden, outputs, generator, seed), clip)
    return b.to(device=device, dtype=dtype or torch.get_default_dtype())


def adaptive_step(b: Tensor, w_old: Tensor, w_new: Tensor, decay: float) -> Tensor:
    """Adaptive e-prop: ``B ← B + (W_new − W_old)ᵀ − decay · B``; ``W`` is ``W_out`` (O, H)."""
    return b + (w_new - w_old).t().to(b.dtype) - decay * b
