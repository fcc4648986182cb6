"""Bad input at the driver's entry (cg.gradient, run_sequence, the trainer): refused with one
message that says what was expected, what came and the fix (issue 22's Python cases)."""

import pytest
import torch

import chronograd as cg
from chronograd.cells import LeakyReadout, LeakyRNN, Stack

D = torch.float64


def setup():
    torch.manual_seed(0)
    model = Stack(LeakyRNN(3, 4), LeakyReadout(4, 2)).double()
    xs, ys = torch.randn(10, 2, 3, dtype=D), torch.randn(10, 2, 2, dtype=D)
    return model, xs, ys


def test_integer_inputs_are_refused_with_the_conversion():
    model, xs, ys = setup()
    with pytest.raises(TypeError, match=r"floating point.*got torch.int64.*xs.to\(torch.float64\)"):
        cg.gradient(cg.BPTT(), model, xs.long(), ys, cg.Objective("mse"))


def test_a_state_of_the_wrong_batch_size_or_kind_is_refused():
    model, xs, ys = setup()
    wrong = model.init_state(5, dtype=D)
    with pytest.raises(ValueError, match=r"batch size B = 2.*init_state\(2\)"):
        cg.gradient(cg.BPTT(), model, xs, ys, cg.Objective("mse"), state=wrong)
    with pytest.raises(TypeError, match="state must be the model's state"):
        cg.gradient(cg.BPTT(), model, xs, ys, cg.Objective("mse"), state="zeros")
    right = model.init_state(2, dtype=D)
    cg.gradient(cg.BPTT(), model, xs, ys, cg.Objective("mse"), state=right)  # accepted


def test_an_objective_window_longer_than_the_sequence_is_refused():
    model, xs, ys = setup()
    with pytest.raises(ValueError, match=r"last 50 steps.*T = 10.*last <= 10"):
        cg.gradient(cg.BPTT(), model, xs, ys, cg.Objective("mse", last=50))
    cg.gradient(cg.BPTT(), model, xs, ys, cg.Objective("mse", last=10))  # the whole sequence
