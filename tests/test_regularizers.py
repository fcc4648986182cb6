import pytest
import torch
from torch import nn

from chronograd.dale import dale_reference
from chronograd.regularizers import (
    L1,
    L2,
    DaleHinge,
    DaleLaw,
    DaleLawL2,
    ExcRatioTarget,
    InhRatioTarget,
    Lp,
    RegularizerList,
    WeightsDistance,
)

D = torch.float64


def leaves(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(*s, generator=g, dtype=D)) for s in shapes]


def grads(value, params):
    return torch.autograd.grad(value, params)


def assert_same_value_and_grad(reg, hand, params):
    """reg() equals the hand formula, and so does its gradient (autograd of the formula)."""
    v, h = reg(), hand()
    torch.testing.assert_close(v, h, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads(v, params), grads(h, params)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_l1_l2_lp_are_element_wise_sums_scaled_by_lambda():
    a, b = leaves((3, 4), (5,))
    ps = [a, b]
    assert_same_value_and_grad(
        L1(ps, Lambda=0.3), lambda: 0.3 * (a.abs().sum() + b.abs().sum()), ps
    )
    assert_same_value_and_grad(L2(ps, Lambda=2.0), lambda: 2.0 * ((a**2).sum() + (b**2).sum()), ps)
    for p in (1.0, 1.5, 3.0):
        hand = lambda p=p: 0.7 * ((a.abs() ** p).sum() + (b.abs() ** p).sum())  # noqa: E731
        assert_same_value_and_grad(Lp(ps, p=p, Lambda=0.7), hand, ps)
    # Element-wise, not NeuroTorch's matrix norms (which differ on a matrix).
    assert not torch.isclose(L1([a])(), torch.linalg.matrix_norm(a, ord=1))
    assert not torch.isclose(L2([a])(), torch.linalg.matrix_norm(a, ord=2))
    # Hand values on a tiny tensor.
    w = nn.Parameter(torch.tensor([[1.0, -2.0], [0.0, 3.0]], dtype=D))
    assert float(L1([w])().detach()) == 6.0
    assert float(L2([w])().detach()) == 14.0
    assert float(Lp([w], p=3)().detach()) == 36.0


def test_params_as_dict_named_parameters_or_single_tensor():
    m = nn.Linear(3, 2).double()
    hand = (m.weight**2).sum() + (m.bias**2).sum()
    for given in (dict(m.named_parameters()), m.named_parameters(), list(m.parameters())):
        torch.testing.assert_close(L2(given)(), hand)
    assert list(L2(dict(m.named_parameters())).params) == ["weight", "bias"]
    assert list(L2(m.named_parameters()).params) == ["weight", "bias"]
    assert list(L2(m.weight).params) == ["0"]


def test_weights_distance():
    w, r = leaves((3, 4), (3, 4))
    ref = r.detach()
    for p in (1, 2, 3):
        hand = lambda p=p: 0.5 * ((w - ref).abs() ** p).sum()  # noqa: E731
        assert_same_value_and_grad(WeightsDistance([w], [ref], p=p, Lambda=0.5), hand, [w])
    reg = WeightsDistance({"w": w}, {"w": ref}, p=2)
    torch.testing.assert_close(reg(), ((w - ref) ** 2).sum())


def test_dale_law_l2_equals_the_seed_trace_formula_for_sign_references():
    (w,) = leaves((4, 5))
    ref = dale_reference((4, 5), pre_dim=0, inh_ratio=0.5, rho=0.7, seed=1, dtype=D)
    for alpha in (0.0, 0.3, 0.8, 1.0):
        reg = DaleLawL2([w], alpha=alpha, reference_weights=[ref], Lambda=1.5)
        trace = lambda a=alpha: 1.5 * torch.trace(w.T @ (a * w - (1 - a) * ref))  # noqa: E731
        assert_same_value_and_grad(reg, trace, [w])
        element = lambda a=alpha: 1.5 * (a * (w**2).sum() - (1 - a) * (w * torch.sign(ref)).sum())  # noqa: E731
        assert_same_value_and_grad(reg, element, [w])


def test_dale_law_l2_uses_only_the_signs_of_a_magnitude_reference():
    w, r = leaves((3, 3), (3, 3))
    ref = r.detach() * 5
    reg = DaleLawL2([w], alpha=0.4, reference_weights=[ref])
    hand = 0.4 * (w**2).sum() - 0.6 * (w * torch.sign(ref)).sum()
    torch.testing.assert_close(reg(), hand)
    assert not torch.isclose(reg(), torch.trace(w.T @ (0.4 * w - 0.6 * ref)))


def test_dale_law_is_the_alpha_zero_case_and_the_hinge_is_bounded():
    a, b = leaves((4, 3), (3, 3))
    refs = [
        dale_reference((4, 3), pre_dim=0, inh_ratio=0.5, seed=2, dtype=D),
        dale_reference((3, 3), pre_dim=1, inh_ratio=0.34, rho=0.6, seed=3, dtype=D),
    ]
    ps = [a, b]
    law = DaleLaw(ps, refs, Lambda=0.9)
    assert_same_value_and_grad(
        law, lambda: -0.9 * sum((p * torch.sign(r)).sum() for p, r in zip(ps, refs)), ps
    )
    torch.testing.assert_close(
        law(), DaleLawL2(ps, alpha=0.0, reference_weights=refs, Lambda=0.9)()
    )
    hinge = DaleHinge(ps, refs, Lambda=2.0)
    assert_same_value_and_grad(
        hinge, lambda: 2.0 * sum(torch.relu(-torch.sign(r) * p).sum() for p, r in zip(ps, refs)), ps
    )

    # The hinge is zero exactly on Dale-respecting weights; DaleLaw keeps decreasing there.
    def value(cls, scale):
        return float(cls([nn.Parameter(refs[0] * scale)], [refs[0]])().detach())

    assert value(DaleHinge, 3.0) == 0.0 and value(DaleHinge, 30.0) == 0.0
    assert value(DaleLaw, 30.0) == 10 * value(DaleLaw, 3.0) < 0
    assert value(DaleHinge, -1.0) == float(refs[0].abs().sum())


def test_generated_references_need_pre_dim_and_follow_the_seed():
    (w,) = leaves((6, 4))
    with pytest.raises(ValueError, match=r"pre_dim=1 for nn\.Linear"):
        DaleLawL2([w])
    r1 = DaleLawL2([w], pre_dim=1, inh_ratio=0.5, rho=0.5, inh_first=False, seed=7)
    r2 = DaleLawL2([w], pre_dim=1, inh_ratio=0.5, rho=0.5, inh_first=False, seed=7)
    r3 = DaleLawL2([w], pre_dim=1, inh_ratio=0.5, rho=0.5, inh_first=False)
    r4 = DaleLawL2([w], pre_dim=1, inh_ratio=0.5, rho=0.5, inh_first=False)
    ref = dale_reference((6, 4), pre_dim=1, inh_ratio=0.5, rho=0.5, inh_first=False, seed=7)
    torch.testing.assert_close(r1.reference_0, ref.to(D))
    torch.testing.assert_close(r1.reference_0, r2.reference_0)
    assert not torch.equal(r3.reference_0, r4.reference_0)


def test_ratio_targets_value_surrogate_gradient_and_reported_ratio():
    a, b = leaves((5, 4), (6,))
    ps = [a, b]
    reg = ExcRatioTarget(ps, target=0.7, Lambda=0.5, temperature=0.8)

    def true_value():
        return 0.5 * sum((torch.sign(p).mean() + 1 - 2 * 0.7).abs() for p in ps)

    def surrogate():  # value of the true formula, gradient of tanh(W / tau) in place of sign
        out = 0
        for p in ps:
            tau = 0.8 * float(p.detach().abs().mean())
            m = torch.sign(p).mean() + 1 - 2 * 0.7
            out = out + torch.sign(m).detach() * torch.tanh(p / tau).mean()
        return 0.5 * out

    torch.testing.assert_close(reg(), true_value(), rtol=1e-12, atol=1e-12)
    for g, h in zip(grads(reg(), ps), grads(surrogate(), ps)):
        torch.testing.assert_close(g, h, rtol=1e-12, atol=1e-12)
        assert g.abs().sum() > 0
    ratios = reg.exc_ratios()
    assert ratios == {
        "0": pytest.approx(float((a > 0).double().mean())),
        "1": pytest.approx(float((b > 0).double().mean())),
    }
    inh = InhRatioTarget(ps, target=0.3, Lambda=0.5, temperature=0.8)
    torch.testing.assert_close(inh(), reg())
    assert inh.inh_ratios() == {k: pytest.approx(1 - v) for k, v in ratios.items()}
    # Hand value: signs (+, -, +, +) -> mean 0.5 -> |0.5 + 1 - 2·0.5| = 0.5.
    w = nn.Parameter(torch.tensor([1.0, -1.0, 2.0, 0.5], dtype=D))
    assert float(ExcRatioTarget([w], target=0.5)().detach()) == 0.5
    assert ExcRatioTarget([w], target=0.5).metrics() == {
        "ExcRatioTarget": 0.5,
        "ExcRatioTarget_exc_ratio": 0.75,
    }


def test_ratio_target_moves_the_ratio_to_the_target():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(20, 20, dtype=D))
    reg = ExcRatioTarget([w], target=0.8)
    opt = torch.optim.SGD([w], lr=20.0)
    start = float(reg().detach())
    for _ in range(40):
        reg.minimize(opt)
    assert float(reg().detach()) < start / 4
    assert abs(reg.exc_ratios()["0"] - 0.8) < 0.05


def test_list_sums_members_and_reports_each():
    a, b = leaves((3, 3), (3, 3))
    ref = dale_reference((3, 3), pre_dim=0, seed=0, dtype=D)
    l2, dale = L2([a, b], Lambda=0.1), DaleHinge([a], [ref], name="dale")
    both = RegularizerList([l2, dale], Lambda=2.0)
    torch.testing.assert_close(both(), 2.0 * (l2() + dale()))
    assert [id(p) for p in both.params.values()] == [id(a), id(b)]
    m = both.metrics()
    assert set(m) == {"RegularizerList", "L2", "dale", "dale_violations"}
    assert m["dale_violations"] == float((torch.sign(ref) * a < 0).sum())
    assert set(both.state_dict()) == {"regularizers.1.reference_0"}
    twice = RegularizerList([L2([a]), L2([b])]).metrics()
    assert set(twice) == {"RegularizerList", "L2", "L2_1"}


def test_references_are_buffers_and_parameters_are_not_registered():
    model = nn.Sequential(nn.Linear(4, 4, bias=False)).double()
    w = model[0].weight
    reg = DaleLawL2({"w": w}, pre_dim=1, seed=0)
    assert set(reg.state_dict()) == {"reference_0"}
    assert list(reg.parameters()) == []
    both = nn.ModuleDict({"model": model, "reg": reg})  # a user may keep them together
    assert sorted(both.state_dict()) == ["model.0.weight", "reg.reference_0"]
    reg.to(torch.float32)
    assert reg.reference_0.dtype == torch.float32
    assert w.dtype == D  # the regularizer never moves the model's parameters
    torch.testing.assert_close(reg(), DaleLawL2({"w": w}, pre_dim=1, seed=0)())
    fresh = DaleLawL2({"w": w}, pre_dim=1, seed=1)
    fresh.load_state_dict(DaleLawL2({"w": w}, pre_dim=1, seed=0).state_dict())
    torch.testing.assert_close(fresh(), DaleLawL2({"w": w}, pre_dim=1, seed=0)())


def test_minimize_steps_its_own_optimizer_explicitly():
    a, b = leaves((4, 4), (4, 4))
    reg = L1([a], Lambda=1.0)
    b0 = b.detach().clone()
    opt = torch.optim.SGD([a, b], lr=0.01)
    before = float(reg().detach())
    value = reg.minimize(opt)
    assert float(value) == pytest.approx(before)
    assert float(reg().detach()) < before
    assert torch.equal(b, b0)  # only the regularized parameter moves
    assert a.grad is None and b.grad is None
    with pytest.raises(ValueError, match="not in the optimizer"):
        reg.minimize(torch.optim.SGD([b], lr=0.1))
    with pytest.raises(TypeError, match="torch optimizer"):
        reg.minimize("sgd")


def test_argument_errors():
    (w,) = leaves((3, 3))
    with pytest.raises(TypeError, match="not the module"):
        L2(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="not a trainable leaf"):
        L2([w * 2])
    with pytest.raises(ValueError, match="not a trainable leaf"):
        L2([torch.ones(2)])
    with pytest.raises(ValueError, match="no parameters"):
        L2([])
    with pytest.raises(ValueError, match="given twice"):
        L2([w, w])
    with pytest.raises(ValueError, match="p must be >= 1"):
        Lp([w], p=0.5)
    with pytest.raises(ValueError, match="Lambda must be"):
        L2([w], Lambda=-1.0)
    with pytest.raises(ValueError, match="alpha must lie"):
        DaleLawL2([w], alpha=1.5, pre_dim=0)
    with pytest.raises(ValueError, match="has shape"):
        WeightsDistance([w], [torch.zeros(2, 2)])
    with pytest.raises(ValueError, match="1 reference weights for 2"):
        DaleLaw(leaves((2, 2), (2, 2)), [torch.ones(2, 2)])
    with pytest.raises(ValueError, match="target must lie"):
        ExcRatioTarget([w], target=1.2)
    with pytest.raises(TypeError, match="holds Regularizers"):
        RegularizerList([lambda: w.sum()])
