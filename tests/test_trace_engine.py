"""The trace engine: relation discovery, hidden groups, per-step Jacobians, learning signals."""

from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import chronograd as cg
from chronograd.cells import (
    ALIF,
    GRU,
    LIF,
    Cell,
    DiagonalRNN,
    HoistedCell,
    LeakyReadout,
    LeakyRNN,
    Map,
    Stack,
    SynapticLIF,
)
from chronograd.rules import DRTRL, PPProp
from chronograd.testing import assert_matches_bptt
from chronograd.traces import compile_graph, hidden_groups

D = torch.float64
T, B = 10, 3


def data(i=4, o=2, T=T):
    g = torch.Generator().manual_seed(1)
    return torch.rand(T, B, i, generator=g, dtype=D) * 2, torch.randn(T, B, o, generator=g, dtype=D)


def graph(model, i=4):
    return compile_graph(model, torch.rand(B, i, dtype=D), model.init_state(B, dtype=D))


class H1(NamedTuple):
    h: torch.Tensor


class UserCell(Cell):
    """A small user cell with a configurable step; state (h,), H = 5."""

    def __init__(self, step, extra=None):
        super().__init__()
        self.input_size, self.output_size, self.H = 4, 5, 5
        self.w = nn.Parameter(torch.randn(5, 4, dtype=D) * 0.5)
        self.register_buffer("M", torch.randn(5, 5, dtype=D))
        for k, v in (extra or {}).items():
            setattr(self, k, v)
        self._step = step

    def init_state(self, batch_size, *, device=None, dtype=None):
        return H1(torch.zeros(batch_size, 5, dtype=D))

    def forward(self, x, state):
        return self._step(self, x, state.h)


# -- discovery and groups ------------------------------------------------------------------------
def test_repr_lists_relations_groups_and_parameters():
    model = Stack(LIF(4, 6), LeakyReadout(6, 2)).double()
    text = repr(graph(model))
    for s in ("layers.0[v]: H=6, S=1", "layers.1[y]: H=2, S=1", "layers.0.input.weight",
              "layers.0.recurrent.weight", "layers.1.input.weight + layers.1.input.bias",
              "-> group 0", "-> group 1", "hoisted=True"):  # fmt: skip
        assert s in text, (s, text)
    g = graph(Stack(GRU(4, 5), LeakyReadout(5, 2)).double())
    assert len(g.relations) == 7 and {r.group for r in g.relations} == {0, 1}
    d = graph(Stack(DiagonalRNN(4, 5), Map(nn.Linear(5, 2))).double())
    assert "neuron parameter layers.0.nu (per-neuron)" in repr(d)
    assert [r.group for r in d.relations] == [0, None]  # the Map is an output relation


def test_grouping_rule():
    for cell, S in ((LIF(4, 5), 1), (ALIF(4, 5), 2), (SynapticLIF(4, 5), 2), (LeakyRNN(4, 5), 1)):
        model = Stack(cell, Map(nn.Tanh(), 5, 5), LeakyReadout(5, 2)).double()
        gs = hidden_groups(model, model.init_state(B, dtype=D), B)
        assert [(g.name, g.S, g.size) for g in gs][-1] == ("layers.2[y]", 1, 2)
        assert gs[0].S == S and gs[0].size == 5 and len(gs) == 2  # the Map has no state


class EIState(NamedTuple):
    e: torch.Tensor
    i: torch.Tensor


class EI(Cell):
    """Excitatory and inhibitory populations of equal size, optionally declared separate."""

    def __init__(self, declare, shared_input=False):
        super().__init__()
        self.input_size, self.output_size = 4, 5
        self.we, self.wi = nn.Linear(4, 5).double(), nn.Linear(4, 5).double()
        self.declare, self.shared = declare, shared_input

    def init_state(self, batch_size, *, device=None, dtype=None):
        return EIState(torch.zeros(batch_size, 5, dtype=D), torch.zeros(batch_size, 5, dtype=D))

    def trace_groups(self):
        if self.declare is None:
            raise AssertionError("not called")
        return self.declare

    def forward(self, x, s):
        ye = self.we(x)
        e = 0.8 * s.e + ye
        i = 0.6 * s.i + (ye if self.shared else self.wi(x))
        return torch.tanh(e - i), EIState(e, i)


def test_explicit_groups_protocol():
    split = EI((("e",), ("i",)))
    gs = hidden_groups(split, split.init_state(B), B)
    assert [(g.name, g.S) for g in gs] == [("[e]", 1), ("[i]", 1)]
    assert_matches_bptt(DRTRL(), split, *data(o=5), cg.Objective("mse"), rtol=1e-9)
    bad = EI((("e",),))
    with pytest.raises(TypeError, match="exactly once"):
        hidden_groups(bad, bad.init_state(B), B)
    with pytest.raises(TypeError, match="feeds several hidden groups"):
        graph(EI((("e",), ("i",)), shared_input=True))


# -- per-step Jacobians --------------------------------------------------------------------------
def test_D_and_Df_of_known_cells():
    x = torch.rand(B, 4, dtype=D)
    rnn = LeakyRNN(4, 5, alpha=0.3).double()
    s = rnn.init_state(B, dtype=D)._replace(h=torch.randn(B, 5, dtype=D))
    step = graph(rnn).solve(x, s)
    a = rnn.input(x) + rnn.recurrent(s.h)
    torch.testing.assert_close(step.D[0][..., 0, 0], torch.full((B, 5), 0.3, dtype=D))
    for i in (0, 1):  # input and recurrent relation: Df = (1 - α) tanh'(a)
        torch.testing.assert_close(step.Df[i][..., 0], 0.7 * (1 - torch.tanh(a) ** 2))
    torch.testing.assert_close(step.inputs[1], s.h)
    gru = GRU(4, 5).double()
    s = gru.init_state(B, dtype=D)._replace(h=torch.randn(B, 5, dtype=D))
    z = torch.sigmoid(gru.input_z(x) + gru.hidden_z(s.h))  # h = (1 - z) n + z h_prev: D = z
    torch.testing.assert_close(graph(gru).solve(x, s).D[0][..., 0, 0], z)
    lif = LIF(4, 5, tau_mem=4.0).double()
    s = lif.init_state(B, dtype=D)._replace(v=torch.rand(B, 5, dtype=D) * 2)
    step = graph(lif).solve(x, s)
    torch.testing.assert_close(step.D[0][..., 0, 0], torch.full((B, 5), float(lif.alpha), dtype=D))
    torch.testing.assert_close(step.Df[0], torch.ones(B, 5, 1, dtype=D))


def test_alif_block_and_two_state_lif_partial_signal():
    x = torch.rand(B, 4, dtype=D)
    alif = ALIF(4, 5, recurrent=False, beta=0.5, tau_adapt=10.0).double()
    s = alif.init_state(B, dtype=D)._replace(
        v=torch.rand(B, 5, dtype=D) + 0.8, a=torch.rand(B, 5, dtype=D)
    )
    Dm = graph(alif).solve(x, s).D[0]
    A = 1.0 + alif.beta * s.a
    psi = 0.3 * torch.clamp(1 - ((s.v - A) / 1.0).abs(), min=0)
    torch.testing.assert_close(Dm[..., 0, 0], torch.full_like(s.v, float(alif.alpha)))
    torch.testing.assert_close(Dm[..., 0, 1], torch.zeros_like(s.v))  # reset detached
    torch.testing.assert_close(Dm[..., 1, 0], psi)
    torch.testing.assert_close(Dm[..., 1, 1], float(alif.rho) - psi * float(alif.beta))
    # two-state LIF: i feeds v within the step; the partial signal of i is 0, not δ^v again
    model = Stack(SynapticLIF(4, 5, recurrent=False), LeakyReadout(5, 2)).double()
    st = model.init_state(B, dtype=D)
    st = (st[0]._replace(v=torch.rand(B, 5, dtype=D) * 2), st[1])
    y = torch.randn(B, 2, dtype=D)
    step = graph(model).solve(x, st, loss=lambda out: ((out - y) ** 2).sum())
    delta = step.delta[0]
    assert delta[..., 0].abs().max() > 1e-3
    torch.testing.assert_close(delta[..., 1], torch.zeros_like(delta[..., 1]))
    out, new = model(x, (st[0], st[1]))
    g_v, g_i = torch.autograd.grad(((out - y) ** 2).sum(), [new[0].v, new[0].i])
    torch.testing.assert_close(g_i, g_v)  # the total derivative double counts
    torch.testing.assert_close(delta[..., 0], g_v)


def test_total_signal_would_double_count_on_the_two_state_lif():
    """braintrace's bug: using g (total) instead of δ (partial) gives the wrong gradient."""
    torch.manual_seed(3)
    model = Stack(SynapticLIF(4, 6, recurrent=False, tau_mem=4.0), LeakyReadout(6, 2)).double()
    xs, ys = data()
    gr = graph(model)
    w = cg.Objective("mse").weights(T, B, dtype=D)
    blk = gr.run(  # the whole sequence as one block of T steps
        gr.prepare(xs), 0, T, model.init_state(B, dtype=D),
        loss=lambda o: (w * ((o - ys) ** 2).mean(-1)).sum(),
    )  # fmt: skip
    e = torch.zeros(B, 4, 6, 2, dtype=D)
    good = torch.zeros(4, 6, dtype=D)
    bad = torch.zeros(4, 6, dtype=D)
    for t in range(T):
        D_t, Df_t, z_t, d_t = blk.D[0][t], blk.Df[0][t], blk.inputs[0][t], blk.delta[0][t]
        e = torch.einsum("bhac,bihc->biha", D_t, e) + z_t[:, :, None, None] * Df_t[:, None]
        good += torch.einsum("biha,bha->ih", e, d_t)
        total = d_t[..., :1].expand(-1, -1, 2)  # g_i = g_v: the total derivative
        bad += torch.einsum("biha,bha->ih", e, total)
    ref = cg.gradient(cg.BPTT(), model, xs, ys, cg.Objective("mse"))["layers.0.input.weight"]
    torch.testing.assert_close(good.t(), ref, rtol=1e-9, atol=1e-12)
    assert (bad.t() - ref).norm() > 0.1 * ref.norm()


# -- what does not fit raises --------------------------------------------------------------------
def _left(cell, x, h):
    h = torch.tanh((cell.w @ x.t()).t() + 0.5 * h)
    return h, H1(h)


def _dense_after(cell, x, h):
    h = 0.5 * h + F.linear(x, cell.w) @ cell.M
    return h, H1(h)


def _mix_state(cell, x, h):
    h = 0.5 * h @ cell.M + F.linear(x, cell.w)
    return h, H1(h)


def _bad_param(cell, x, h):
    h = 0.5 * h * cell.p.sum(0) + F.linear(x, cell.w)
    return h, H1(h)


@pytest.mark.parametrize(
    "step, extra, match",
    [
        (_left, None, r"'w' multiplies its input from the left.*F\.linear"),
        (_dense_after, None, r"relation 'w' is mixed across neurons"),
        (_mix_state, None, r"mixes neurons within a step"),
        (_bad_param, {"p": nn.Parameter(torch.rand(5, 5, dtype=D))}, r"parameter 'p' of shape"),
    ],
)
def test_cells_that_do_not_fit_raise_with_the_reason(step, extra, match):
    cell = UserCell(step, extra)
    with pytest.raises(TypeError, match=match):
        graph(cell)
    with pytest.raises(TypeError, match=match):
        DRTRL().check_model(cell)


def test_weight_reaching_the_state_through_another_relation_raises():
    model = Stack(Map(nn.Linear(4, 6)), LIF(6, 5, recurrent=False), LeakyReadout(5, 2)).double()
    msg = r"'layers\.0\.module\.weight' reaches the hidden state only through another relation \(layers\.1\.input\.weight\)"
    for rule in (DRTRL(), PPProp()):
        with pytest.raises(TypeError, match=msg):
            rule.check_model(model)
        with pytest.raises(TypeError, match=msg):
            cg.gradient(rule, model, *data(), cg.Objective("mse"))
    # documented treatment: freeze the Map; the rest trains and is exact
    rule = DRTRL(params=("layers.1.*", "layers.2.*"))
    assert_matches_bptt(rule, model, *data(), cg.Objective("mse"), rtol=1e-9)


# -- special parameter kinds ---------------------------------------------------------------------
def _direct_out(cell, x, h):
    u = F.linear(x, cell.w)
    h = 0.7 * h + u
    return h + 0.5 * torch.tanh(u), H1(h)


def _shared_leak(cell, x, h):
    h = torch.sigmoid(cell.a) * h + F.linear(x, cell.w) + cell.b
    return torch.tanh(h), H1(h)


def _threshold(cell, x, h):  # a per-neuron parameter that also acts on the output directly
    h = 0.8 * h + F.linear(x, cell.w) + 0.1 * cell.th
    return torch.tanh(h - cell.th), H1(h)


def _early_out(cell, x, h):  # the output is taken before the state is final: via h_{t-1}
    h = 0.8 * h + F.linear(x, cell.w)
    return torch.tanh(h - cell.th), H1(h + 0.1 * cell.th)


@pytest.mark.parametrize(
    "step, extra",
    [
        (_direct_out, None),
        (
            _shared_leak,
            {
                "a": nn.Parameter(torch.tensor(0.3, dtype=D)),
                "b": nn.Parameter(torch.randn(5, dtype=D)),
            },
        ),
        (_threshold, {"th": nn.Parameter(torch.randn(5, dtype=D))}),
    ],
)
def test_direct_paths_and_neuron_parameters_are_exact(step, extra):
    cell = UserCell(step, extra)
    xs, _ = data()
    ys = torch.randn(T, B, 5, dtype=D)
    assert_matches_bptt(DRTRL(), cell, xs, ys, cg.Objective("mse"), rtol=1e-9)


def _prev_out(cell, x, h):
    new = 0.7 * h + F.linear(x, cell.w)
    return torch.tanh(h) + new, H1(new)  # the output uses the previous state


def test_multi_step_adds_the_previous_state_term():
    cell = UserCell(_prev_out)
    xs, _ = data()
    ys = torch.randn(T, B, 5, dtype=D)
    obj = cg.Objective("mse")
    assert_matches_bptt(DRTRL(mode="previous-state"), cell, xs, ys, obj, rtol=1e-9)
    single = cg.gradient(DRTRL(), cell, xs, ys, obj)["w"]
    ref = cg.gradient(cg.BPTT(), cell, xs, ys, obj)["w"]
    assert (single - ref).norm() > 0.05 * ref.norm()
    # with a readout on top, the term crosses the readout's relation
    model = Stack(cell, LeakyReadout(5, 2)).double()
    assert_matches_bptt(DRTRL(mode="previous-state"), model, *data(), obj, rtol=1e-9)
    cell = UserCell(_early_out, {"th": nn.Parameter(torch.randn(5, dtype=D))})
    assert_matches_bptt(DRTRL(mode="previous-state"), cell, xs, ys, obj, rtol=1e-9)
    # and it is zero on a cell whose output depends on the new state only
    lif = Stack(LIF(4, 5, recurrent=False), LeakyReadout(5, 2)).double()
    a = cg.gradient(DRTRL(mode="previous-state"), lif, *data(), obj)
    b = cg.gradient(DRTRL(), lif, *data(), obj)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "cell",
    [
        LIF(4, 5, detach_reset=False),
        ALIF(4, 5, beta=0.4, tau_adapt=6.0, detach_reset=False),
        SynapticLIF(4, 5, detach_reset=False),
        LeakyRNN(4, 5, alpha=0.4, activation="sigmoid"),
        DiagonalRNN(4, 5, normalize=False),
        LeakyReadout(4, 5, kappa=0.3),
    ],
)
def test_analytic_fast_path_matches_autodiff(cell):
    model = Stack(cell, LeakyReadout(5, 2)).double()
    g = graph(model)
    assert g.analytic == {0, 1}, repr(g)
    x = torch.rand(B, 4, dtype=D)
    st = tuple(type(s)(*(torch.rand_like(t) * 2 for t in s)) for s in model.init_state(B, dtype=D))
    fast = g.solve(x, st)
    g.analytic = frozenset()  # force the autodiff path
    slow = g.solve(x, st)
    for a, b in zip(fast.D + fast.Df, slow.D + slow.Df):
        if a is not None:
            torch.testing.assert_close(a, b)


def test_a_wrong_formula_is_not_used(monkeypatch):
    import chronograd.traces.analytic as analytic

    def wrong(cell, prev, new):  # D = 0.5 instead of α
        v = prev["v"]
        return torch.full((*v.shape, 1, 1), 0.5, dtype=D), torch.ones(*v.shape, 1, dtype=D)

    monkeypatch.setitem(analytic.FORMULAS, LIF, wrong)
    model = Stack(LIF(4, 5, recurrent=False), LeakyReadout(5, 2)).double()
    g = graph(model)
    assert g.analytic == {1} and "layers.0[v]: H=5, S=1 (v), D/Df by autodiff" in repr(g)
    assert_matches_bptt(DRTRL(), model, *data(), cg.Objective("mse"), rtol=1e-9)


class Scaled(HoistedCell):
    """A hoisted cell whose input relation sees a transformed input (2 x), not x itself."""

    def __init__(self):
        super().__init__()
        self.input_size, self.output_size = 4, 5
        self.input = nn.Linear(4, 5).double()

    def init_state(self, batch_size, *, device=None, dtype=None):
        return H1(torch.zeros(batch_size, 5, dtype=D))

    def input_map(self, x):
        return self.input(2.0 * x)

    def step(self, u, state):
        h = 0.6 * state.h + torch.tanh(u)
        return h, H1(h)


def test_hoisted_relation_inputs_are_the_recorded_ones():
    cell = Scaled()
    assert graph(cell).hoisted
    xs, _ = data()
    assert_matches_bptt(
        DRTRL(), cell, xs, torch.randn(T, B, 5, dtype=D), cg.Objective("mse"), rtol=1e-9
    )
