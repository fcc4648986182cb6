"""The driver's non-finite checks use sums (no tensor-sized temporaries): exact all the same."""

import pytest
import torch

from chronograd.rules.driver import _finite, check_like_model


def test_nonfinite_gradients_are_named_and_overflowing_sums_are_not():
    big = torch.full((4,), 3e38)  # finite, but its float32 sum overflows to inf
    grads = {"a": torch.ones(3), "b": big, "c": torch.tensor([1.0, float("nan")]),
             "d": torch.tensor([float("inf"), -float("inf")])}  # fmt: skip
    assert _finite(grads) == ["c", "d"]
    assert _finite({"a": torch.ones(2)}) == [] and _finite({}) == []


def test_input_check_accepts_large_finite_inputs_and_rejects_nan():
    model = torch.nn.Linear(2, 2)
    check_like_model(torch.full((3, 2, 2), 3e38), model)
    xs = torch.zeros(3, 2, 2)
    xs[1, 0, 1] = float("nan")
    with pytest.raises(ValueError, match=r"first at index \(t, b, \.\.\.\) = \(1, 0, 1\)"):
        check_like_model(xs, model)
