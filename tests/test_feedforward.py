import pytest
import torch
from torch import nn

import chronograd as cg
from chronograd import BPTT, TBPTT, Objective
from chronograd.cells import LIF, LeakyReadout, Map, SequenceDropout, Stack, spiking_mlp
from chronograd.rules import FPTT, OTTT, SLTT
from chronograd.testing import assert_pure_step

D = torch.float64


def test_spiking_mlp_builds_feed_forward_lif_layers_and_a_readout():
    model = spiking_mlp((784, 64, 32, 10))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["LIF", "LIF", "LeakyReadout"]
    assert all(layer.recurrent is None for layer in model.layers[:2])
    assert (model.input_size, model.output_size) == (784, 10)
    rec = spiking_mlp((8, 6, 2), recurrent=True, dropout=0.3, kappa=0.5)
    assert [type(layer).__name__ for layer in rec.layers] == [
        "LIF",
        "SequenceDropout",
        "LeakyReadout",
    ]
    assert rec.layers[0].recurrent is not None and rec.layers[2].kappa == 0.5
    with pytest.raises(ValueError, match="hidden layer"):
        spiking_mlp((8, 2))


@pytest.mark.parametrize(
    "rule", [BPTT(), TBPTT(3), OTTT(), SLTT(), FPTT(0.1, chunk_size=2)], ids=str
)
def test_feed_forward_stacks_with_parameterless_layers_work_with_every_rule(rule):
    torch.manual_seed(0)
    model = Stack(
        Map(nn.Flatten(), output_size=8),
        LIF(8, 10, recurrent=False, tau_mem=4.0, threshold=0.4),
        Map(nn.AvgPool1d(2), 10, 5),
        SequenceDropout(5, 0.2),
        LIF(5, 6, recurrent=True, tau_mem=3.0, threshold=0.4),
        LeakyReadout(6, 2),
    ).double()
    xs = torch.rand(7, 3, 2, 4, dtype=D) * 2  # (T, B, C, L)
    ys = torch.randn(7, 3, 2, dtype=D)
    g = cg.gradient(rule, model, xs, ys, Objective("mse"))
    assert set(g) == {n for n, _ in model.named_parameters()}
    assert all(torch.isfinite(v).all() for v in g.values())
    assert float(g["layers.1.input.weight"].abs().sum()) > 0


def test_sequence_dropout_draws_one_mask_per_sequence():
    torch.manual_seed(1)
    drop = SequenceDropout(50, p=0.4).double()
    state = drop.init_state(6, dtype=D)
    kept = state.mask != 0
    assert 0 < kept.float().mean() < 1
    torch.testing.assert_close(state.mask[kept], torch.full_like(state.mask[kept], 1 / 0.6))
    xs = torch.rand(5, 6, 50, dtype=D) + 0.1
    ys, final = cg.unroll(drop, xs, state)
    assert torch.equal((ys != 0), kept.expand(5, 6, 50))  # the same units at every step
    assert torch.equal(final.mask, state.mask)
    assert not torch.equal(drop.init_state(6, dtype=D).mask, state.mask)  # a new sequence
    assert_pure_step(drop, xs[0], state)
    drop.eval()
    ys, _ = cg.unroll(drop, xs, drop.init_state(6, dtype=D))
    torch.testing.assert_close(ys, xs)  # identity in eval mode
    assert torch.equal(SequenceDropout(4, 0.0).init_state(2).mask, torch.ones(2, 4))
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="p must"):
            SequenceDropout(4, bad)
    with pytest.raises(ValueError, match="size"):
        SequenceDropout(0)
