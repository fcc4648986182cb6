import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from chronograd.dale import (
    broadcast_signs,
    connection_mask,
    dale_recurrent,
    dale_reference,
    exact_count,
    excitatory_fraction,
    inhibitory_fraction,
    neuron_signs,
    sign_violations,
    spectral_radius,
)

D = torch.float64


def presynaptic_signs_of(ref, pre_dim):
    """The one sign of each presynaptic neuron's connected entries (asserts there is one)."""
    rows = ref if pre_dim == 0 else ref.T  # (n_pre, n_post)
    out = []
    for row in rows:
        nz = torch.sign(row[row != 0])
        assert bool((nz == nz[0]).all()) if len(nz) else True, "a neuron with mixed signs"
        out.append(float(nz[0]) if len(nz) else 0.0)
    return torch.tensor(out)


@settings(max_examples=60, deadline=None)
@given(
    n_pre=st.integers(1, 12),
    n_post=st.integers(1, 12),
    pre_dim=st.sampled_from([0, 1]),
    inh_ratio=st.floats(0.0, 1.0),
    rho=st.floats(0.0, 1.0),
    inh_first=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_reference_has_exactly_the_requested_density_and_inhibitory_count(
    n_pre, n_post, pre_dim, inh_ratio, rho, inh_first, seed
):
    # Exact construction: counts equal floor(fraction * n + 1/2), no sampling tolerance.
    shape = (n_pre, n_post) if pre_dim == 0 else (n_post, n_pre)
    opts = dict(pre_dim=pre_dim, inh_ratio=inh_ratio, inh_first=inh_first, seed=seed)
    ref = dale_reference(shape, rho=rho, **opts)
    assert ref.shape == shape
    assert set(ref.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert int((ref != 0).sum()) == math.floor(rho * n_pre * n_post + 0.5)
    # The signs are drawn before the mask, so the fully connected reference of the same seed
    # shows every neuron's sign; the sparse one agrees with it wherever it is connected.
    full = dale_reference(shape, rho=1.0, **opts)
    assert bool((full != 0).all())
    signs = presynaptic_signs_of(full, pre_dim)
    assert int((signs < 0).sum()) == math.floor(inh_ratio * n_pre + 0.5)
    assert torch.equal(ref[ref != 0], full[ref != 0])
    presynaptic_signs_of(ref, pre_dim)  # each neuron keeps one sign
    if inh_first:
        n_inh = exact_count(inh_ratio, n_pre)
        assert torch.equal(signs, torch.tensor([-1.0] * n_inh + [1.0] * (n_pre - n_inh)))
    torch.testing.assert_close(
        signs, neuron_signs(n_pre, inh_ratio=inh_ratio, inh_first=inh_first, seed=seed)
    )


def test_rho_one_is_fully_connected_and_rectangular_shapes_work():
    for shape, pre_dim in (((3, 7), 0), ((3, 7), 1), ((1, 5), 0), ((6, 6), 1)):
        ref = dale_reference(shape, pre_dim=pre_dim, rho=1.0, inh_ratio=0.4)
        assert ref.shape == shape and bool((ref.abs() == 1).all())
        n_pre = shape[pre_dim]
        assert int((presynaptic_signs_of(ref, pre_dim) < 0).sum()) == exact_count(0.4, n_pre)
    assert int(dale_reference((4, 5), pre_dim=0, rho=0.0).abs().sum()) == 0
    assert bool(connection_mask((2, 3), rho=1.0).all())


def test_unseeded_calls_differ_and_seeded_calls_repeat():
    opts = dict(pre_dim=0, inh_ratio=0.5, rho=0.5, inh_first=False)
    a, b = dale_reference((20, 30), **opts), dale_reference((20, 30), **opts)
    assert not torch.equal(a, b)
    torch.testing.assert_close(
        dale_reference((20, 30), seed=3, **opts), dale_reference((20, 30), seed=3, **opts)
    )
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(
        dale_reference((20, 30), generator=g1, **opts),
        dale_reference((20, 30), generator=g2, **opts),
    )
    assert not torch.equal(
        dale_reference((20, 30), seed=3, **opts), dale_reference((20, 30), seed=4, **opts)
    )
    u1, u2 = dale_recurrent(12, pre_dim=0), dale_recurrent(12, pre_dim=0)
    assert not torch.equal(u1, u2)


def test_argument_errors():
    with pytest.raises(ValueError, match="not both"):
        dale_reference((2, 2), pre_dim=0, seed=1, generator=torch.Generator())
    with pytest.raises(TypeError):
        dale_reference((2, 2))  # pre_dim is required: the axis is always stated
    with pytest.raises(ValueError, match="pre_dim must be 0"):
        dale_reference((2, 2), pre_dim=2)
    with pytest.raises(ValueError, match="rho must lie"):
        dale_reference((2, 2), pre_dim=0, rho=1.5)
    with pytest.raises(ValueError, match="inh_ratio must lie"):
        neuron_signs(3, inh_ratio=-0.1)
    with pytest.raises(ValueError, match="two positive ints"):
        dale_reference((2, 2, 2), pre_dim=0)
    with pytest.raises(ValueError, match="presynaptic axis"):
        broadcast_signs(torch.ones(3), (3, 4), pre_dim=1)
    with pytest.raises(ValueError, match="need pre_dim"):
        broadcast_signs(torch.ones(3), (3, 4), pre_dim=None)


@pytest.mark.parametrize("radius", [0.5, 1.0, 1.7])
@pytest.mark.parametrize("pre_dim", [0, 1])
def test_dale_recurrent_has_the_target_spectral_radius_and_respects_dale(radius, pre_dim):
    n = 16
    w = dale_recurrent(n, pre_dim=pre_dim, spectral_radius=radius, inh_ratio=0.25, seed=1, dtype=D)
    eig = torch.linalg.eigvals(w).abs().max()
    torch.testing.assert_close(eig, torch.tensor(radius, dtype=D), rtol=1e-9, atol=0)
    assert spectral_radius(w) == pytest.approx(radius, rel=1e-9)
    assert bool((torch.diagonal(w) == 0).all())  # no autapses by default
    # Same seed, same signs: the ones neuron_signs draws first.
    signs = neuron_signs(n, inh_ratio=0.25, seed=1, dtype=D)
    assert sign_violations(w, signs, pre_dim=pre_dim) == 0
    assert int((presynaptic_signs_of(w, pre_dim) < 0).sum()) == 4
    # balanced=True multiplies the inhibitory magnitudes by n_exc / n_inh = 12 / 4.
    wu = dale_recurrent(n, pre_dim=pre_dim, inh_ratio=0.25, balanced=False, seed=1, dtype=D)
    ratio = (w / wu.where(wu != 0, 1.0)) if pre_dim == 0 else (w / wu.where(wu != 0, 1.0)).T
    off = ~torch.eye(n, dtype=torch.bool)
    inh_scale, exc_scale = ratio[:4][off[:4]], ratio[4:][off[4:]]
    torch.testing.assert_close(inh_scale / exc_scale.mean(), torch.full_like(inh_scale, 3.0))
    # autapses=True keeps the diagonal.
    wa = dale_recurrent(n, pre_dim=pre_dim, inh_ratio=0.25, autapses=True, seed=1, dtype=D)
    assert torch.diagonal(wa).abs().min() > 0
    with pytest.raises(ValueError, match="no non-zero eigenvalue"):
        dale_recurrent(1, pre_dim=0)


def test_fractions_and_violations_on_a_hand_tensor():
    w = torch.tensor([[1.0, -2.0], [0.0, 3.0]], dtype=D)
    # mean(sign W) = (1 - 1 + 0 + 1) / 4 = 0.25 -> r = 0.625
    assert float(excitatory_fraction(w)) == pytest.approx(0.625)
    assert float(inhibitory_fraction(w)) == pytest.approx(0.375)
    s = torch.tensor([1.0, -1.0])
    assert sign_violations(w, s, pre_dim=0) == 2  # -2 in the + row, 3 in the - row
    assert sign_violations(w, s, pre_dim=1) == 1  # columns (1, 0) with +, (-2, 3) with -: 3
    assert sign_violations(w.T, s, pre_dim=1) == 2  # (post, pre) layout of the same weights
    assert sign_violations(w, torch.sign(w)) == 0
