import pytest
import torch

from chronograd import Objective

D = torch.float64


def test_mse_mean_over_all_steps_and_samples():
    o, y = torch.randn(6, 3, 2, dtype=D), torch.randn(6, 3, 2, dtype=D)
    torch.testing.assert_close(Objective("mse").loss(o, y), ((o - y) ** 2).mean())
    torch.testing.assert_close(
        Objective("mse", reduction="sum").loss(o, y), ((o - y) ** 2).mean(-1).sum()
    )


def test_last_n_and_mask_and_maximize():
    o, y = torch.randn(6, 3, 2, dtype=D), torch.randn(6, 3, 2, dtype=D)
    per = ((o - y) ** 2).mean(-1)
    torch.testing.assert_close(Objective("mse", last=2).loss(o, y), per[-2:].mean())
    m = torch.tensor([0, 1, 0, 1, 1, 0], dtype=D)
    torch.testing.assert_close(Objective("mse", mask=m).loss(o, y), per[m.bool()].mean())
    torch.testing.assert_close(Objective("mse", mask=m, last=2).loss(o, y), per[4].mean())
    torch.testing.assert_close(Objective("mse", maximize=True).loss(o, y), -per.mean())
    mb = (torch.rand(6, 3) > 0.5).to(D)
    torch.testing.assert_close(Objective("mse", mask=mb).loss(o, y), (per * mb).sum() / mb.sum())


def test_cross_entropy_with_labels_and_probabilities():
    logits = torch.randn(5, 4, 3, dtype=D)
    labels = torch.randint(0, 3, (5, 4))
    ref = torch.nn.functional.cross_entropy(logits.reshape(20, 3), labels.reshape(20))
    torch.testing.assert_close(Objective("cross_entropy").loss(logits, labels), ref)
    probs = torch.nn.functional.one_hot(labels, 3).to(D)
    torch.testing.assert_close(Objective("cross_entropy").loss(logits, probs), ref)
    with pytest.raises(ValueError, match=r"expand\(T, B\)"):
        Objective("cross_entropy").loss(logits, labels[0])


def test_windows_of_a_sum_objective_add_up_to_the_whole():
    o, y = torch.randn(8, 2, 1, dtype=D), torch.randn(8, 2, 1, dtype=D)
    obj = Objective("mse", reduction="sum", last=5)
    parts = sum(obj.loss(o[a:b], y[a:b], start=a, total=8) for a, b in ((0, 3), (3, 6), (6, 8)))
    torch.testing.assert_close(parts, obj.loss(o, y))


def test_full_window_weights_reproduce_the_loss_step_by_step():
    o, y = torch.randn(8, 2, 1, dtype=D), torch.randn(8, 2, 1, dtype=D)
    obj = Objective("mse", last=3)
    w = obj.weights(8, 2, dtype=D)
    per = obj.per_sample(o, y)
    torch.testing.assert_close(sum((w[t] * per[t]).sum() for t in range(8)), obj.loss(o, y))


def test_named_outputs_each_with_its_criterion():
    out = {"a": torch.randn(4, 2, 3, dtype=D), "b": torch.randn(4, 2, 5, dtype=D)}
    tgt = {"a": torch.randn(4, 2, 3, dtype=D), "b": torch.randint(0, 5, (4, 2))}
    obj = Objective({"a": "mse", "b": "cross_entropy"}, output_weights={"b": 0.5})
    a = ((out["a"] - tgt["a"]) ** 2).mean()
    b = torch.nn.functional.cross_entropy(out["b"].reshape(8, 5), tgt["b"].reshape(8))
    torch.testing.assert_close(obj.loss(out, tgt), a + 0.5 * b)
    with pytest.raises(ValueError, match="output 'b' is missing"):
        obj.loss({"a": out["a"]}, tgt)


def test_custom_criterion_must_be_unreduced():
    o, y = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match="reduction='none'"):
        Objective(torch.nn.functional.mse_loss).loss(o, y)
    obj = Objective(lambda a, b: (a - b).abs())
    torch.testing.assert_close(obj.loss(o, y), (o - y).abs().mean())


def test_regularizers_enter_the_penalty():
    w = torch.nn.Parameter(torch.ones(3))
    obj = Objective("mse", regularizers=[lambda: (w**2).sum()])
    assert float(obj.penalty().detach()) == 3.0
    with pytest.raises(TypeError, match="regularizers must be callables"):
        Objective("mse", regularizers=[1.0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reduction": "max"}, "reduction must be"),
        ({"last": 0}, "last must be a positive int"),
        ({"criterion": "hinge"}, "unknown criterion"),
    ],
)
def test_invalid_objectives_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Objective(**kwargs)


@pytest.mark.parametrize(
    "mask",
    [
        None,
        torch.tensor([1, 0, 1, 1, 0, 1, 1, 0.5]),
        (torch.rand(8, 3) > 0.3).double(),
        lambda T: torch.arange(T) % 3 != 0,
    ],
    ids=["none", "tensor", "per-sample", "callable"],
)
@pytest.mark.parametrize("last", [None, 5])
def test_window_masks_are_slices_of_the_full_mask(mask, last):
    obj = Objective("mse", mask=mask, last=last)
    full = obj.full_mask(8, 3, dtype=D)
    for a, b in [(0, 8), (0, 3), (2, 6), (5, 8), (7, 8)]:
        torch.testing.assert_close(obj.window_mask(8, 3, start=a, stop=b, dtype=D), full[a:b])


def test_a_callable_mask_is_evaluated_once_per_sequence_length():
    calls = []

    def mask(T):
        calls.append(T)
        return torch.ones(T)

    obj = Objective("mse", mask=mask)
    for t in range(10):
        obj.weights(10, 2, start=t, stop=t + 1)
    assert calls == [10]
