"""Dale's law: presynaptic signs, seeded reference weights, Dale-respecting initialisation.

Sign convention. A weight matrix ``W[pre, post]`` maps presynaptic activity ``x`` ``(B, n_pre)``
to postsynaptic input ``x @ W`` ``(B, n_post)``; this is ``pre_dim=0``. Dale's law says every
outgoing weight of presynaptic neuron ``i`` has that neuron's sign ``s_i`` (``+1`` excitatory,
``-1`` inhibitory)::

    s_i · W[i, j] ≥ 0   for every postsynaptic j

so the sign is carried by the *rows* of ``W[pre, post]``. ``nn.Linear`` (every chronograd cell)
stores its weight as ``(post, pre)`` and computes ``x @ weight.T``: for those weights the
presynaptic axis is the *column*, ``pre_dim=1``. Every function that broadcasts per-neuron signs
onto a matrix takes ``pre_dim`` as a required keyword, so the axis is always stated.

Exact construction (no sampling tolerance): with ``round(x) = floor(x + 1/2)``,

- exactly ``round(inh_ratio · n_pre)`` presynaptic neurons are inhibitory: the first ones when
  ``inh_first=True``, otherwise a uniformly random subset;
- exactly ``round(rho · n_pre · n_post)`` entries are connected, a uniformly random subset
  (``rho = 1``: all of them, without drawing any random number).

Randomness comes from ``generator`` (a ``torch.Generator``) or ``seed`` (a fresh CPU generator
seeded with it); with neither, from torch's global generator, so unseeded calls differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

Device = torch.device | str | None


def resolve_generator(
    generator: torch.Generator | None, seed: int | None
) -> torch.Generator | None:
    """The generator to draw from: ``generator``, a fresh one seeded with ``seed``, or None."""
    if generator is not None and seed is not None:
        raise ValueError("give either generator= or seed=, not both")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        return torch.Generator().manual_seed(seed)
    return generator


def exact_count(fraction: float, n: int) -> int:
    """``floor(fraction · n + 1/2)``: the number of items a fraction asks for."""
    return math.floor(fraction * n + 0.5)


def _check_fraction(name: str, value: float, *, open_low: bool = False) -> None:
    ok = 0.0 < value <= 1.0 if open_low else 0.0 <= value <= 1.0
    if not ok:
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def neuron_signs(
    n: int,
    *,
    inh_ratio: float = 0.2,
    inh_first: bool = True,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    device: Device = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Signs ``s`` ``(n,)`` of ``n`` neurons: exactly ``round(inh_ratio · n)`` of them are ``-1``.

    Args:
        n: number of (presynaptic) neurons.
        inh_ratio: fraction of inhibitory neurons, in ``[0, 1]``.
        inh_first: the inhibitory neurons are ``0 .. n_inh-1``; otherwise a random subset.
        generator, seed: source of randomness (see the module docstring).
        device, dtype: of the result (default: CPU, the default float dtype).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    _check_fraction("inh_ratio", inh_ratio)
    g = resolve_generator(generator, seed)
    n_inh = exact_count(inh_ratio, n)
    signs = torch.ones(n, dtype=dtype or torch.get_default_dtype())
    if inh_first:
        signs[:n_inh] = -1.0
    else:
        inh = torch.randperm(n, generator=g, device=_gen_device(g))[:n_inh].cpu()
        signs[inh] = -1.0
    return signs.to(device)


def connection_mask(
    shape: Sequence[int],
    *,
    rho: float = 1.0,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    device: Device = None,
) -> Tensor:
    """A boolean mask of ``shape`` with exactly ``round(rho · numel)`` True entries.

    ``rho = 1`` gives an all-True mask (fully connected) without drawing random numbers.
    """
    _check_fraction("rho", rho)
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    if rho == 1.0:
        return torch.ones(shape, dtype=torch.bool, device=device)
    g = resolve_generator(generator, seed)
    k = exact_count(rho, numel)
    keep = torch.randperm(numel, generator=g, device=_gen_device(g))[:k].cpu()
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[keep] = True
    return mask.view(shape).to(device)


def _check_matrix_shape(shape: Sequence[int], pre_dim: int) -> tuple[int, int]:
    shape = tuple(shape)
    if len(shape) != 2 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"a weight matrix shape is two positive ints, got {shape!r}")
    if pre_dim not in (0, 1):
        raise ValueError(
            f"pre_dim must be 0 (W[pre, post], used as x @ W) or 1 (nn.Linear weights "
            f"(post, pre)), got {pre_dim!r}"
        )
    return shape[0], shape[1]


def broadcast_signs(signs: Tensor, shape: Sequence[int], pre_dim: int | None) -> Tensor:
    """Per-neuron signs ``(n_pre,)`` spread over a matrix of ``shape`` along ``pre_dim``.

    A ``signs`` tensor that already has ``shape`` (element-wise signs) is returned unchanged and
    ``pre_dim`` is not needed.
    """
    shape = tuple(shape)
    if signs.dim() == len(shape) == 2 and tuple(signs.shape) == shape:
        return signs
    if signs.dim() != 1:
        raise ValueError(
            f"signs must be per presynaptic neuron (n_pre,) or element-wise {shape}, got "
            f"{tuple(signs.shape)}"
        )
    if pre_dim is None:
        raise ValueError(
            "per-neuron signs need pre_dim: 0 for W[pre, post] (x @ W), 1 for nn.Linear "
            "weights (post, pre)"
        )
    _check_matrix_shape(shape, pre_dim)
    if signs.shape[0] != shape[pre_dim]:
        raise ValueError(
            f"{signs.shape[0]} signs for a weight of shape {shape} whose presynaptic axis "
            f"pre_dim={pre_dim} has {shape[pre_dim]} neurons"
        )
    return (signs[:, None] if pre_dim == 0 else signs[None, :]).expand(shape)


def dale_reference(
    shape: Sequence[int],
    *,
    pre_dim: int,
    inh_ratio: float = 0.2,
    rho: float = 1.0,
    inh_first: bool = True,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    device: Device = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """A Dale reference matrix of ``shape`` with entries in ``{-1, 0, +1}``.

    ``ref = s ⊗ mask``: each presynaptic neuron's sign (:func:`neuron_signs`) on its connected
    entries (:func:`connection_mask`), zero elsewhere. Rectangular shapes are fine.

    Args:
        shape: ``(n_pre, n_post)`` with ``pre_dim=0``; ``(n_post, n_pre)`` with ``pre_dim=1``
            (an ``nn.Linear`` weight).
        pre_dim: the presynaptic axis (required; see the module docstring).
        inh_ratio, inh_first: inhibitory neurons (exact count).
        rho: connection density in ``[0, 1]`` (exact count; 1 = fully connected).
        generator, seed: source of randomness; unseeded calls use the global generator.
        device, dtype: of the result.
    """
    _check_matrix_shape(shape, pre_dim)
    g = resolve_generator(generator, seed)
    shape = tuple(shape)
    s = neuron_signs(shape[pre_dim], inh_ratio=inh_ratio, inh_first=inh_first, generator=g)
    mask = connection_mask(shape, rho=rho, generator=g)
    ref = broadcast_signs(s, shape, pre_dim) * mask
    return ref.to(device=device, dtype=dtype or torch.get_default_dtype())


def spectral_radius(weight: Tensor) -> float:
    """``max |λ(W)|`` of a square matrix (computed in float64 on the weight's device)."""
    if weight.dim() != 2 or weight.shape[0] != weight.shape[1]:
        raise ValueError(f"spectral_radius needs a square matrix, got {tuple(weight.shape)}")
    return float(torch.linalg.eigvals(weight.detach().double()).abs().max())


def dale_recurrent(
    n: int,
    *,
    pre_dim: int,
    spectral_radius: float = 1.0,
    inh_ratio: float = 0.2,
    rho: float = 1.0,
    inh_first: bool = True,
    balanced: bool = True,
    autapses: bool = False,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    device: Device = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Dale-respecting recurrent weights ``(n, n)`` with spectral radius ``spectral_radius``.

    ``W = c · |G| ⊙ ref`` with ``G ~ N(0, 1)`` i.i.d., ``ref`` from :func:`dale_reference`, the
    inhibitory rows (columns for ``pre_dim=1``) multiplied by ``n_exc / n_inh`` when
    ``balanced`` (so each neuron's expected excitatory and inhibitory inputs cancel), the
    diagonal zeroed unless ``autapses``, and ``c = spectral_radius / max |λ|`` so that
    ``max |λ(W)| = spectral_radius`` up to rounding. Copy it into an ``nn.Linear`` recurrent
    weight with ``pre_dim=1``: ``layer.weight.copy_(dale_recurrent(n, pre_dim=1, ...))``.
    """
    if not spectral_radius > 0:
        raise ValueError(f"spectral_radius must be > 0, got {spectral_radius}")
    g = resolve_generator(generator, seed)
    ref = dale_reference(
        (n, n), pre_dim=pre_dim, inh_ratio=inh_ratio, rho=rho, inh_first=inh_first,
        generator=g, dtype=torch.float64,
    )  # fmt: skip
    mags = torch.randn(n, n, generator=g, device=_gen_device(g), dtype=torch.float64).abs()
    w = mags.cpu() * ref
    if balanced:
        signs = ref.sum(dim=1 - pre_dim).sign()  # (n,) one per presynaptic neuron (0: none)
        n_inh, n_exc = int((signs < 0).sum()), int((signs > 0).sum())
        if n_inh > 0 and n_exc > 0:
            scale = 1.0 + (signs < 0).double() * (n_exc / n_inh - 1.0)  # (n,)
            w = w * broadcast_signs(scale, (n, n), pre_dim)
    if not autapses:
        w.fill_diagonal_(0.0)
    radius = float(torch.linalg.eigvals(w).abs().max())
    if radius == 0.0:
        raise ValueError(
            "these weights have no non-zero eigenvalue (too sparse or too small a network); "
            "raise rho or n, or allow autapses"
        )
    w = w * (spectral_radius / radius)
    return w.to(device=device, dtype=dtype or torch.get_default_dtype())


def excitatory_fraction(weight: Tensor) -> Tensor:
    """``r = (mean(sign W) + 1) / 2``: the fraction of positive entries, zeros counting half."""
    return (torch.sign(weight.detach()).mean() + 1.0) / 2.0


def inhibitory_fraction(weight: Tensor) -> Tensor:
    """``1 - excitatory_fraction(W)``: the fraction of negative entries, zeros counting half."""
    return 1.0 - excitatory_fraction(weight)


def sign_violations(weight: Tensor, signs: Tensor, *, pre_dim: int | None = None) -> int:
    """How many entries contradict their sign: ``#{(i, j): s_ij · W_ij < 0}``.

    Args:
        weight: ``(n_pre, n_post)`` (``pre_dim=0``) or ``(n_post, n_pre)`` (``pre_dim=1``).
        signs: per presynaptic neuron ``(n_pre,)`` (needs ``pre_dim``) or element-wise, shaped
            like ``weight``.
    """
    s = broadcast_signs(signs.to(weight.device), weight.shape, pre_dim)
    return int((s * weight.detach() < 0).sum())
