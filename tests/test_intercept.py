import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jvp

from chronograd.cells import GRU, LIF, LeakyReadout, LIFState, Stack
from chronograd.cells.base import Cell
from chronograd.traces import find_relations, intercept_linears, relation_output

D = torch.float64


class MatmulCell(Cell):
    """A user cell written with a matmul parameter and F.linear."""

    def __init__(self):
        super().__init__()
        self.input_size, self.output_size = 3, 4
        self.w_in = nn.Parameter(torch.randn(3, 4, dtype=D))
        self.w_rec = nn.Parameter(torch.randn(4, 4, dtype=D))
        self.b = nn.Parameter(torch.randn(4, dtype=D))
        self.tau = nn.Parameter(torch.tensor(0.5, dtype=D))

    def init_state(self, batch_size, *, device=None, dtype=None):
        return (torch.zeros(batch_size, 4, dtype=D),)

    def forward(self, x, state):
        (h,) = state
        h = self.tau * h + torch.tanh(x @ self.w_in + F.linear(h, self.w_rec, self.b))
        return h, (h,)


def test_find_relations_in_shipped_and_user_cells():
    model = Stack(LIF(3, 5), LeakyReadout(5, 2)).double()
    x = torch.randn(2, 3, dtype=D)
    calls = find_relations(model, x, model.init_state(2))
    assert [(c.weight, c.bias, c.form) for c in calls] == [
        ("layers.0.input.weight", None, "linear"),
        ("layers.0.recurrent.weight", None, "linear"),
        ("layers.1.input.weight", "layers.1.input.bias", "linear"),
    ]
    assert torch.equal(calls[0].input, x)
    gru = GRU(3, 4).double()
    assert len(find_relations(gru, x, gru.init_state(2))) == 6
    cell = MatmulCell()
    calls = find_relations(cell, x, cell.init_state(2))
    assert [(c.weight, c.bias, c.form) for c in calls] == [
        ("w_in", None, "right"),
        ("w_rec", "b", "linear"),
    ]


def test_handler_can_inject_outputs_and_the_default_is_the_original():
    cell = MatmulCell()
    x, state = torch.randn(2, 3, dtype=D), (torch.randn(2, 4, dtype=D),)
    ref, _ = cell(x, state)
    params = dict(cell.named_parameters())
    with intercept_linears(params, lambda call, default: default()):
        same, _ = cell(x, state)
    torch.testing.assert_close(same, ref)
    fixed = torch.full((2, 4), 0.25, dtype=D)

    def inject(call, default):
        return fixed if call.weight == "w_in" else default()

    with intercept_linears(params, inject):
        got, _ = cell(x, state)
    want = cell.tau * state[0] + torch.tanh(fixed + F.linear(state[0], cell.w_rec, cell.b))
    torch.testing.assert_close(got, want)


def test_interception_works_under_jvp_with_outputs_held_fixed():
    cell = LIF(3, 4, tau_mem=10.0).double()
    x = torch.randn(2, 3, dtype=D)
    v = torch.randn(2, 4, dtype=D)
    params = dict(cell.named_parameters())
    with torch.no_grad(), intercept_linears(params) as rec:
        cell(x, LIFState(v))
    ys = [relation_output(c, params[c.weight]) for c in rec.calls]

    def step(v):
        it = iter(ys)
        with intercept_linears(params, lambda call, default: next(it)):
            return cell(x, LIFState(v))[1].v

    _, tangent = jvp(step, (v,), (torch.ones_like(v),))
    # with the recurrent input held fixed and the reset detached, dv_t/dv_{t-1} = alpha
    torch.testing.assert_close(tangent, torch.full_like(v, float(cell.alpha)))
