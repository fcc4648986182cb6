"""What OSTL, OTPE and OSTTP share through the base: a regularizer's gradient added once per
update, the params= selection, and a model with a trained parameter they cannot handle."""

import pytest
import torch

import chronograd as cg
from chronograd.regularizers import L2
from chronograd.sequence import spans
from tests.spiking_hand import D, two_layer

RULES = ["ostl", "otpe", "osttp"]


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("name", RULES)
def test_penalty_gradient_is_added_once_per_update(name, chunk):
    model, xs, ys = two_layer()
    rule = cg.rules.get(name, chunk_size=chunk)
    w = dict(model.named_parameters())["layers.0.input.weight"]
    reg = L2([("layers.0.input.weight", w)], Lambda=0.3)
    plain = cg.gradient(rule, model, xs, ys, cg.Objective("mse"))
    with_reg = cg.gradient(rule, model, xs, ys, cg.Objective("mse", regularizers=[reg]))
    updates = len(list(spans(xs.shape[0], rule.chunk_length(xs.shape[0]))))
    (g_pen,) = torch.autograd.grad(reg(), [w])
    assert float(g_pen.abs().sum()) > 0
    for n in plain:
        extra = updates * g_pen if n == "layers.0.input.weight" else torch.zeros_like(plain[n])
        torch.testing.assert_close(with_reg[n] - plain[n], extra, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", RULES)
def test_params_selects_and_unknown_trained_parameters_are_refused(name):
    model, xs, ys = two_layer()
    full = cg.gradient(cg.rules.get(name), model, xs, ys, cg.Objective("mse"))
    some = cg.gradient(
        cg.rules.get(name, params=("layers.1.*",)), model, xs, ys, cg.Objective("mse")
    )
    assert set(some) == {"layers.1.input.weight"}
    torch.testing.assert_close(some["layers.1.input.weight"], full["layers.1.input.weight"])
    model.layers[0].register_parameter("gain", torch.nn.Parameter(torch.ones(3, dtype=D)))
    with pytest.raises(TypeError, match="gain"):
        cg.gradient(cg.rules.get(name), model, xs, ys, cg.Objective("mse"))
