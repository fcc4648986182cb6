import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn
from torch.func import functional_call

import chronograd as cg
from chronograd import BPTT, TBPTT, Objective
from chronograd.cells import LeakyReadout, LeakyRNN, Stack
from chronograd.constraints import (
    DaleProjection,
    NoAutapses,
    SparsityMask,
    apply_constraints,
    dale_parametrize,
    dale_project,
)
from chronograd.dale import neuron_signs, sign_violations
from chronograd.training import Trainer

D = torch.float64


@st.composite
def weight_and_signs(draw):
    n_pre, n_post = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    pre_dim = draw(st.sampled_from([0, 1]))
    shape = (n_pre, n_post) if pre_dim == 0 else (n_post, n_pre)
    values = draw(arrays("float64", shape, elements=st.floats(-10, 10, width=64)))
    signs = draw(arrays("float64", (n_pre,), elements=st.sampled_from([-1.0, 1.0])))
    return torch.from_numpy(values), torch.from_numpy(signs), pre_dim


@settings(max_examples=80, deadline=None)
@given(weight_and_signs())
def test_dale_projection_is_idempotent_sign_correct_and_shape_preserving(case):
    w0, signs, pre_dim = case
    w = nn.Parameter(w0.clone())
    c = DaleProjection(w, signs, pre_dim=pre_dim)
    c()
    once = w.detach().clone()
    assert once.shape == w0.shape
    s = (signs[:, None] if pre_dim == 0 else signs[None, :]).expand_as(w0)
    assert bool((s * once >= 0).all())  # sign-correct
    assert sign_violations(once, signs, pre_dim=pre_dim) == 0 and c.holds()
    kept = s * w0 >= 0
    assert torch.equal(once[kept], w0[kept])  # entries already right are untouched
    assert bool((once[~kept] == 0).all())  # the others go to the nearest allowed value, 0
    c()
    assert torch.equal(w.detach(), once)  # idempotent
    assert torch.equal(dale_project(once, s), once)


def test_element_wise_signs_with_zero_force_zero():
    w = nn.Parameter(torch.tensor([[1.0, -2.0], [3.0, -4.0]], dtype=D))
    c = DaleProjection(w, torch.tensor([[1.0, 0.0], [-1.0, -1.0]]))
    assert c.violations() == 2
    c()
    assert torch.equal(w.detach(), torch.tensor([[1.0, 0.0], [0.0, -4.0]], dtype=D))


def test_no_autapses_and_sparsity_mask():
    w = nn.Parameter(torch.arange(9.0, dtype=D).view(3, 3) + 1)
    mask = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 1, 1]])
    apply_constraints([NoAutapses(w), SparsityMask(w, mask)])
    expected = torch.tensor([[0, 0, 3], [4, 0, 0], [0, 8, 0]], dtype=D)
    assert torch.equal(w.detach(), expected)
    with pytest.raises(ValueError, match="square"):
        NoAutapses(nn.Parameter(torch.ones(2, 3)))
    with pytest.raises(ValueError, match="shaped like the weight"):
        SparsityMask(w, torch.ones(2, 2))
    with pytest.raises(ValueError, match="0 or 1"):
        SparsityMask(w, torch.full((3, 3), 0.5))


def test_constraints_reference_weights_and_own_buffers():
    layer = nn.Linear(4, 4, bias=False)
    c = DaleProjection(layer.weight, torch.ones(4), pre_dim=1)
    assert list(c.parameters()) == [] and set(c.state_dict()) == {"signs"}
    m = SparsityMask(layer.weight, torch.ones(4, 4))
    holder = nn.ModuleDict({"layer": layer, "dale": c, "mask": m})
    assert sorted(holder.state_dict()) == ["dale.signs", "layer.weight", "mask.mask"]
    with pytest.raises(ValueError, match="need pre_dim"):
        DaleProjection(layer.weight, torch.ones(4))
    with pytest.raises(ValueError, match="-1, 0 or"):
        DaleProjection(layer.weight, torch.full((4,), 0.5), pre_dim=1)
    with pytest.raises(ValueError, match="computed tensor"):
        NoAutapses(layer.weight * 2)


def rnn(hidden=6, seed=0):
    torch.manual_seed(seed)
    return Stack(LeakyRNN(3, hidden, alpha=0.3), LeakyReadout(hidden, 2)).double()


def data(T=16, B=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, 3, generator=g, dtype=D)
    return x, torch.cumsum(x[..., :2], 0) * 0.2


def test_parametrized_dale_weight_obeys_signs_and_works_with_functional_call():
    model = rnn()
    rec = model.layers[0].recurrent
    signs = neuron_signs(6, inh_ratio=0.5, inh_first=False, seed=3, dtype=D)
    raw0 = rec.weight.detach().clone()
    dale_parametrize(rec, "weight", signs, pre_dim=1)  # nn.Linear weights are (post, pre)
    s = signs[None, :].expand(6, 6)
    torch.testing.assert_close(rec.weight, raw0.abs() * s)  # registered: W = |W| ⊙ S
    assert sign_violations(rec.weight, signs, pre_dim=1) == 0
    name = "layers.0.recurrent.parametrizations.weight.original"
    assert name in dict(model.named_parameters())
    raw = torch.randn(6, 6, dtype=D)
    x = torch.randn(2, 3, dtype=D)
    state = model.init_state(2, dtype=D)
    y, _ = functional_call(model, {name: raw}, (x, state))
    with torch.no_grad():
        rec.parametrizations.weight.original.copy_(raw)
    y_ref, _ = model(x, state)
    torch.testing.assert_close(y, y_ref)
    # And the chain rule holds: dL/dW_raw = dL/dW ⊙ S ⊙ sign(W_raw).
    xs, ys = data()
    obj = Objective("mse")
    g = cg.gradient(BPTT(), model, xs, ys, obj)[name]
    plain = rnn()
    with torch.no_grad():
        plain.load_state_dict(
            {k: v for k, v in model.state_dict().items() if "parametrizations" not in k},
            strict=False,
        )
        plain.layers[0].recurrent.weight.copy_(rec.weight)
    g_w = cg.gradient(BPTT(), plain, xs, ys, obj)["layers.0.recurrent.weight"]
    torch.testing.assert_close(g, g_w * s * torch.sign(raw), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", [BPTT(), TBPTT(4), TBPTT(4, 8)], ids=["bptt", "tbptt", "tbptt-k2"])
def test_parametrized_dale_trains_with_bptt_and_tbptt(rule):
    model = rnn()
    rec = model.layers[0].recurrent
    signs = neuron_signs(6, inh_ratio=0.34, seed=0, dtype=D)
    dale_parametrize(rec, "weight", signs, pre_dim=1)
    before = rec.weight.detach().clone()
    trainer = Trainer(model, rule, Objective("mse"), lr=0.05)
    seen = []
    trainer.add_handler(
        cg.training.Event.CHUNK_COMPLETED,
        lambda t: seen.append(sign_violations(rec.weight, signs, pre_dim=1)),
    )
    history = trainer.fit(lambda e: [data(seed=e)], epochs=6)
    assert history["loss"][-1] < history["loss"][0]
    assert not torch.allclose(rec.weight, before)
    assert seen and set(seen) == {0}
