"""OTTT and SLTT replay their back-propagated steps side by side in blocks
(traces/instantaneous.py): the same gradient, outputs, loss, state and carry as one graph per
step, for every block size, chunking, loss window and SLTT-K draw; a step that draws random
numbers falls back to one graph per step and draws exactly what that path draws."""

import pytest
import torch
from torch import nn

import chronograd as cg
from chronograd import Objective
from chronograd.cells import LIF, LeakyReadout, Map, SequenceDropout, Stack
from chronograd.rules import OTTT, SLTT
from chronograd.training import run_sequence

D = torch.float64
T, B = 9, 3


def net(recurrent=True):
    torch.manual_seed(1)
    return Stack(
        LIF(4, 7, recurrent=recurrent, tau_mem=3.0, threshold=0.4),
        Map(nn.AvgPool1d(1), 7, 7),
        SequenceDropout(7, 0.3),
        LIF(7, 5, tau_mem=2.0, threshold=0.3),
        LeakyReadout(5, 2, kappa=0.5),
    ).double()


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, 4, generator=g, dtype=D) * 1.5, torch.randn(
        T, B, 2, generator=g, dtype=D
    )


def run(rule, model, xs, ys, obj, state):
    res = run_sequence(rule, model, xs, ys, obj, state=state)
    return res


CASES = [
    (lambda **k: OTTT(**k), {}),
    (lambda **k: OTTT(**k), {"chunk_size": 1}),
    (lambda **k: OTTT(**k), {"chunk_size": 4, "trace_input": True}),
    (lambda **k: SLTT(**k), {}),
    (lambda **k: SLTT(**k), {"chunk_size": 2}),
    (lambda **k: SLTT(**k), {"k": 4, "seed": 3}),
]


@pytest.mark.parametrize("block", [1, 5, 32])
@pytest.mark.parametrize("make, opts", CASES)
@pytest.mark.parametrize("last", [None, 4])
def test_replayed_blocks_equal_one_graph_per_step(make, opts, block, last):
    model, (xs, ys) = net(), data()
    state = model.init_state(B, dtype=D)  # the dropout mask of this sequence
    obj = Objective("mse", last=last)
    ref = run(make(replay_block=None, **opts), model, xs, ys, obj, state)
    got = run(make(replay_block=block, **opts), model, xs, ys, obj, state)
    assert set(got.grads) == set(ref.grads)
    for n in ref.grads:
        torch.testing.assert_close(got.grads[n], ref.grads[n], rtol=1e-10, atol=1e-14, msg=n)
    assert any(float(g.abs().sum()) > 0 for g in got.grads.values())
    torch.testing.assert_close(got.outputs, ref.outputs, rtol=0, atol=1e-14)
    assert got.loss == pytest.approx(ref.loss, rel=1e-12)
    for a, b in zip(cg._tree.tree_leaves(got.state), cg._tree.tree_leaves(ref.state)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    if isinstance(got.carry, tuple) and hasattr(got.carry, "graph_steps"):  # SLTT
        assert got.carry.graph_steps == ref.carry.graph_steps
    if hasattr(got.carry, "traces"):  # OTTT: the traces handed to the next chunk
        for key, (a, c) in ref.carry.traces.items():
            torch.testing.assert_close(got.carry.traces[key][0], a, rtol=1e-12, atol=1e-14)
            assert got.carry.traces[key][1] == pytest.approx(c)


class NoisyStep(nn.Module):
    """A stateless map that draws fresh noise at every step (dropout inside the step)."""

    def __init__(self, n):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.n = n

    def forward(self, x):
        return self.drop(x)


@pytest.mark.parametrize("make", [OTTT, SLTT])
def test_a_step_that_draws_random_numbers_falls_back_and_draws_the_same(make):
    torch.manual_seed(0)
    model = Stack(
        LIF(4, 6, tau_mem=3.0, threshold=0.4), Map(NoisyStep(6), 6, 6), LeakyReadout(6, 2)
    ).double()
    xs, ys = data(1)
    obj = Objective("mse")
    torch.manual_seed(5)
    ref = cg.gradient(make(replay_block=None), model, xs, ys, obj)
    after_ref = torch.get_rng_state()
    torch.manual_seed(5)
    got = cg.gradient(make(replay_block=4), model, xs, ys, obj)
    assert torch.equal(torch.get_rng_state(), after_ref)  # the same draws, no more
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-10, atol=1e-14, msg=n)


def test_replay_block_is_validated():
    for make in (OTTT, SLTT):
        with pytest.raises(ValueError, match="replay_block must be a positive int"):
            make(replay_block=0)
