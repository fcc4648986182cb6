import itertools
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import chronograd as cg
from chronograd import BPTT, TBPTT, Objective
from chronograd.cells import (
    ALIF,
    GRU,
    LIF,
    HoistedCell,
    LeakyReadout,
    Map,
    SequenceDropout,
    Stack,
    Triangle,
)
from chronograd.cells.base import Cell
from chronograd.rules import OTTT, SLTT
from chronograd.testing import assert_matches_bptt
from chronograd.training import run_sequence

D = torch.float64
T, B = 12, 3


class IntegratorState(NamedTuple):
    u: torch.Tensor


class LeakyIntegrator(HoistedCell):
    """``u_t = α u_{t-1} + W x_t + b`` (no reset, no recurrence), output ``tanh(u_t)``."""

    def __init__(self, i, h, alpha):
        super().__init__()
        self.input_size, self.output_size = i, h
        self.input = nn.Linear(i, h)
        self.register_buffer("alpha", torch.tensor(alpha))

    def init_state(self, batch_size, *, device=None, dtype=None):
        return IntegratorState(
            torch.zeros(batch_size, self.output_size, device=device, dtype=dtype)
        )

    def input_map(self, x):
        return self.input(x)

    def step(self, u, state):
        v = self.alpha * state.u + u
        return torch.tanh(v), IntegratorState(v)


def integrator_net(layers=1):
    cells = [LeakyIntegrator(4, 6, 0.8)]
    if layers == 2:
        cells.append(LeakyIntegrator(6, 5, 0.6))
    n = cells[-1].output_size
    return Stack(*cells, LeakyReadout(n, 2, kappa=0.0)).double()


def test_ottt_equals_bptt_on_a_leaky_integrator_read_out_at_the_same_step():
    """OTTT == BPTT for: one leaky linear integrator ``u_t = α u_{t-1} + W x_t + b`` (no reset,
    no recurrence, any output nonlinearity of ``u_t``) into a stateless readout (κ = 0), with a
    loss on each step's own output (any mask), and the trace decay λ = α. Then the trace
    ``â_t = Σ_τ α^{t-τ} x_τ`` is exactly ``du_t/dW`` and the readout's λ = 0 trace is its input,
    so the only paths OTTT drops (through time into ``ℓ_t``) do not exist. With a second
    integrator layer the path ``u1_τ -> u2_t`` for ``τ < t`` exists and OTTT is not exact."""
    torch.manual_seed(1)
    model = integrator_net()
    xs, ys = torch.randn(T, B, 4, dtype=D), torch.randn(T, B, 2, dtype=D)
    for obj in (Objective("mse"), Objective("mse", last=4), Objective("mse", reduction="sum")):
        assert_matches_bptt(OTTT(trace_input=True), model, xs, ys, obj, rtol=1e-10)
    # one update per step: each step is its own window, so compare with a sum reduction
    assert_matches_bptt(
        OTTT(chunk_size=1, trace_input=True), model, xs, ys, Objective("mse", reduction="sum"),
        rtol=1e-10,
    )  # fmt: skip
    # without tracing the raw input the first layer gets the instantaneous gradient: not exact
    g = cg.gradient(OTTT(), model, xs, ys, Objective("mse"))
    r = cg.gradient(BPTT(), model, xs, ys, Objective("mse"))
    assert not torch.allclose(g["layers.0.input.weight"], r["layers.0.input.weight"])
    deep = integrator_net(layers=2)
    g = cg.gradient(OTTT(trace_input=True), deep, xs, ys, Objective("mse"))
    r = cg.gradient(BPTT(), deep, xs, ys, Objective("mse"))
    assert not torch.allclose(g["layers.0.input.weight"], r["layers.0.input.weight"], rtol=1e-3)


def _psi(v, th):
    """Triangle pseudo-derivative dz/dv at threshold ``th`` (γ = 0.3)."""
    return 0.3 * torch.clamp(1 - ((v - th) / th).abs(), min=0) / th


def hand_gradients(model, xs, ys, state, kind, flat=False):
    """Per-step formulas on Stack(LIF, [mid...], LIF, LeakyReadout(κ=0)), MSE with mean over
    T·B, written out by hand. ``kind``: 'ottt', 'ottt_in' (trace the input), 'sltt'.
    ``∇W_l += δ_{l,t}ᵀ â_{l-1,t}`` with ``â = λ_l â + s`` (λ_l the decay of the layer the map
    feeds), or ``s`` itself for SLTT; ``δ`` back-propagated through the step only."""
    layers = list(model.layers)
    l1, mid, l2, ro = layers[0], layers[1:-2], layers[-2], layers[-1]
    if flat:
        l1, mid = layers[1], layers[2:-2]
    mask = None
    for layer, s in zip(layers, state):
        if isinstance(layer, SequenceDropout):
            mask = s.mask

    def through_mid(s):  # the parameterless layers, applied to spikes *and* to traces
        for m in mid:
            s = s * mask if isinstance(m, SequenceDropout) else m.module(s)
        return s

    def back_through_mid(g):  # their transposes (dropout: the mask; AvgPool1d(2): spread / 2)
        for m in reversed(mid):
            g = g * mask if isinstance(m, SequenceDropout) else g.repeat_interleave(2, -1) / 2
        return g

    a1, a2 = float(l1.alpha), float(l2.alpha)
    th1, th2 = l1.threshold, l2.threshold
    W1, W2, W3, b3 = l1.input.weight, l2.input.weight, ro.input.weight, ro.input.bias
    g = {k: torch.zeros_like(v) for k, v in (("W1", W1), ("W2", W2), ("W3", W3), ("b3", b3))}
    Tn, Bn = xs.shape[:2]
    O = ys.shape[-1]
    v1 = torch.zeros(Bn, W1.shape[0], dtype=D)
    v2 = torch.zeros(Bn, W2.shape[0], dtype=D)
    tr_x = tr_1 = tr_1_through = None
    with torch.no_grad():
        for t in range(Tn):
            x = xs[t].flatten(1)
            v1 = a1 * v1 + x @ W1.T - (v1 > th1).to(D) * th1
            s1 = (v1 > th1).to(D)
            s1m = through_mid(s1)
            v2 = a2 * v2 + s1m @ W2.T - (v2 > th2).to(D) * th2
            s2 = (v2 > th2).to(D)
            o = s2 @ W3.T + b3
            dO = (2.0 / O) * (o - ys[t]) / (Tn * Bn)
            g["W3"] += dO.T @ s2
            g["b3"] += dO.sum(0)
            d2 = (dO @ W3) * _psi(v2, th2)
            d1 = back_through_mid(d2 @ W2) * _psi(v1, th1)
            # W2 feeds layer 2: its trace decays with layer 2's alpha
            tr_1 = s1m if tr_1 is None else a2 * tr_1 + s1m
            # the same trace, built upstream and passed through the parameterless layers
            tr_1_through = s1 if tr_1_through is None else a2 * tr_1_through + s1
            assert torch.allclose(through_mid(tr_1_through), tr_1)
            tr_x = x if tr_x is None else a1 * tr_x + x
            g["W2"] += d2.T @ (s1m if kind == "sltt" else tr_1)
            g["W1"] += d1.T @ (tr_x if kind == "ottt_in" else x)
    return g


def spiking_net(mid=()):
    l1 = LIF(5, 8, recurrent=False, tau_mem=4.0, threshold=0.5)
    n = 8
    for m in mid:
        if isinstance(m, Map):
            n = n // 2
    return Stack(l1, *mid, LIF(n, 6, recurrent=False, tau_mem=2.0, threshold=0.4),
                 LeakyReadout(6, 3)).double()  # fmt: skip


def _names(model, flat=False):
    i1 = 1 if flat else 0
    i2 = len(model.layers) - 2
    return {
        "W1": f"layers.{i1}.input.weight",
        "W2": f"layers.{i2}.input.weight",
        "W3": f"layers.{i2 + 1}.input.weight",
        "b3": f"layers.{i2 + 1}.input.bias",
    }


@pytest.mark.parametrize(
    "mid",
    [(), (Map(nn.AvgPool1d(2), 8, 4), SequenceDropout(4, 0.4))],
    ids=["plain", "pool+dropout"],
)
def test_ottt_and_sltt_equal_their_per_step_formulas_on_a_two_layer_spiking_network(mid):
    torch.manual_seed(2)
    model = spiking_net(mid)
    xs = torch.rand(T, B, 5, dtype=D) * 1.5
    ys = torch.randn(T, B, 3, dtype=D)
    state = model.init_state(B, dtype=D)  # draws the dropout mask of this sequence
    obj = Objective("mse")
    for rule, kind in ((OTTT(), "ottt"), (OTTT(trace_input=True), "ottt_in"), (SLTT(), "sltt")):
        got = cg.gradient(rule, model, xs, ys, obj, state=state)
        want = hand_gradients(model, xs, ys, state, kind)
        for k, n in _names(model).items():
            torch.testing.assert_close(got[n], want[k], rtol=1e-10, atol=1e-13)
    # the surrogate paths are exercised and the traces matter
    n = _names(model)
    ottt = cg.gradient(OTTT(), model, xs, ys, obj, state=state)
    sltt = cg.gradient(SLTT(), model, xs, ys, obj, state=state)
    assert float(sltt[n["W1"]].abs().sum()) > 0
    assert not torch.allclose(ottt[n["W2"]], sltt[n["W2"]])


def test_traces_pass_flatten_at_the_input_and_stay_raw():
    torch.manual_seed(3)
    l1 = LIF(6, 8, recurrent=False, tau_mem=4.0, threshold=0.5)
    model = Stack(Map(nn.Flatten(), output_size=6), l1,
                  LIF(8, 6, recurrent=False, tau_mem=2.0, threshold=0.4),
                  LeakyReadout(6, 3)).double()  # fmt: skip
    xs = torch.rand(T, B, 2, 3, dtype=D) * 1.5  # (T, B, C, L), flattened inside the step
    ys = torch.randn(T, B, 3, dtype=D)
    state = model.init_state(B, dtype=D)
    for rule, kind in ((OTTT(), "ottt"), (OTTT(trace_input=True), "ottt_in")):
        got = cg.gradient(rule, model, xs, ys, Objective("mse"), state=state)
        want = hand_gradients(model, xs, ys, state, kind, flat=True)
        for k, n in _names(model, flat=True).items():
            torch.testing.assert_close(got[n], want[k], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Stack(LIF(4, 7, tau_mem=5.0, threshold=0.5), LeakyReadout(7, 2, kappa=0.6)),
        lambda: Stack(ALIF(4, 7, tau_mem=5.0, threshold=0.5), LeakyReadout(7, 2)),
        lambda: Stack(GRU(4, 5), LeakyReadout(5, 2, kappa=0.3)),
    ],
    ids=["lif", "alif", "gru"],
)
def test_sltt_is_tbptt_of_one_step_with_a_per_step_loss(make):
    torch.manual_seed(4)
    model = make().double()
    xs, ys = torch.rand(T, B, 4, dtype=D) * 2, torch.randn(T, B, 2, dtype=D)
    for obj in (Objective("mse"), Objective("mse", last=5)):
        g = cg.gradient(SLTT(chunk_size=1), model, xs, ys, obj)
        r = cg.gradient(TBPTT(1), model, xs, ys, obj)
        for n in r:
            torch.testing.assert_close(g[n], r[n], rtol=1e-12, atol=1e-14)
    # one update per sequence: the same sum of step gradients when the loss is not normalised
    obj = Objective("mse", reduction="sum")
    g = cg.gradient(SLTT(), model, xs, ys, obj)
    r = cg.gradient(TBPTT(1), model, xs, ys, obj)
    for n in r:
        torch.testing.assert_close(g[n], r[n], rtol=1e-12, atol=1e-14)
    # and it is not BPTT on a recurrent cell
    b = cg.gradient(BPTT(), model, xs, ys, obj)
    assert any(not torch.allclose(g[n], b[n]) for n in b)


def test_ottt_with_zero_decay_is_sltt():
    torch.manual_seed(5)
    model = spiking_net()
    xs, ys = torch.rand(T, B, 5, dtype=D) * 1.5, torch.randn(T, B, 3, dtype=D)
    g = cg.gradient(OTTT(decay=0.0), model, xs, ys, Objective("mse"))
    r = cg.gradient(SLTT(), model, xs, ys, Objective("mse"))
    for n in r:
        torch.testing.assert_close(g[n], r[n], rtol=1e-12, atol=1e-14)


def test_ottt_decay_mapping_overrides_by_pattern():
    torch.manual_seed(6)
    model = spiking_net()
    xs, ys = torch.rand(T, B, 5, dtype=D) * 1.5, torch.randn(T, B, 3, dtype=D)
    obj = Objective("mse")
    got = cg.gradient(OTTT(decay={"layers.1.*": 0.0}), model, xs, ys, obj)
    sltt = cg.gradient(SLTT(), model, xs, ys, obj)
    ottt = cg.gradient(OTTT(), model, xs, ys, obj)
    torch.testing.assert_close(got["layers.1.input.weight"], sltt["layers.1.input.weight"])
    assert not torch.allclose(ottt["layers.1.input.weight"], sltt["layers.1.input.weight"])


def test_recurrent_relations_are_traced_with_the_membrane_decay():
    """LIF with recurrent weights: the recurrent map's input z_{t-1} comes from the (detached)
    state, so it is traced (λ = α), while the input map sees the raw input."""
    torch.manual_seed(7)
    lif = LIF(3, 5, recurrent=True, tau_mem=3.0, threshold=0.3)
    model = Stack(lif, LeakyReadout(5, 2)).double()
    xs, ys = torch.rand(T, B, 3, dtype=D) * 2, torch.randn(T, B, 2, dtype=D)
    got = cg.gradient(OTTT(), model, xs, ys, Objective("mse", reduction="sum"))
    a, th = float(lif.alpha), lif.threshold
    Win, Wrec, Wo = lif.input.weight, lif.recurrent.weight, model.layers[1].input.weight
    v = torch.zeros(B, 5, dtype=D)
    tr, gin, grec = None, torch.zeros_like(Win), torch.zeros_like(Wrec)
    with torch.no_grad():
        for t in range(T):
            z_prev = (v > th).to(D)
            v = a * v + xs[t] @ Win.T + z_prev @ Wrec.T - z_prev * th
            z = (v > th).to(D)
            o = z @ Wo.T + model.layers[1].input.bias
            d = ((2.0 / 2) * (o - ys[t])) @ Wo * _psi(v, th)
            tr = z_prev if tr is None else a * tr + z_prev
            gin += d.T @ xs[t]
            grec += d.T @ tr
    torch.testing.assert_close(got["layers.0.input.weight"], gin, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(got["layers.0.recurrent.weight"], grec, rtol=1e-10, atol=1e-13)


def test_sltt_k_with_k_equal_t_is_sltt_and_uses_exactly_k_graph_steps():
    torch.manual_seed(8)
    model = spiking_net()
    xs, ys = torch.rand(T, B, 5, dtype=D) * 1.5, torch.randn(T, B, 3, dtype=D)
    obj = Objective("mse")
    full = run_sequence(SLTT(), model, xs, ys, obj)
    k_t = run_sequence(SLTT(k=T), model, xs, ys, obj)
    for n in full.grads:
        torch.testing.assert_close(k_t.grads[n], full.grads[n], rtol=1e-12, atol=1e-14)
    assert full.carry.graph_steps == T and k_t.carry.graph_steps == T
    assert run_sequence(SLTT(k=3), model, xs, ys, obj).carry.graph_steps == 3
    # with a loss on the last 4 steps only, K = 4 draws exactly those steps
    last = Objective("mse", last=4)
    g = run_sequence(SLTT(k=4), model, xs, ys, last)
    assert g.carry.graph_steps == 4
    ref = cg.gradient(SLTT(), model, xs, ys, last)
    for n in ref:
        torch.testing.assert_close(g.grads[n], ref[n], rtol=1e-12, atol=1e-14)


def test_sltt_k_is_the_sum_over_k_seeded_random_steps():
    torch.manual_seed(9)
    model = spiking_net()
    Tn = 6
    xs, ys = torch.rand(Tn, B, 5, dtype=D) * 1.5, torch.randn(Tn, B, 3, dtype=D)
    obj = Objective("mse", reduction="sum")
    per_step = []
    run_sequence(SLTT(chunk_size=1), model, xs, ys, obj,
                 on_chunk_end=lambda span, step: per_step.append(step.grads))  # fmt: skip
    names = list(per_step[0])

    def subset_of(grads):
        hits = [
            s for s in itertools.combinations(range(Tn), 2)
            if all(torch.allclose(grads[n], sum(per_step[t][n] for t in s)) for n in names)
        ]  # fmt: skip
        assert len(hits) == 1
        return hits[0]

    first = run_sequence(SLTT(k=2, seed=3), model, xs, ys, obj)
    again = run_sequence(SLTT(k=2, seed=3), model, xs, ys, obj)
    s1 = subset_of(first.grads)
    assert subset_of(again.grads) == s1  # seeded
    # the generator persists across sequences: the next sequence draws from where it stopped
    draws = [s1]
    carry = first.carry
    for _ in range(4):
        nxt = run_sequence(SLTT(k=2, seed=3), model, xs, ys, obj, carry=carry)
        draws.append(subset_of(nxt.grads))
        carry = nxt.carry
    assert len(set(draws)) > 1
    # and a checkpoint of the carry resumes the same draws
    rule = SLTT(k=2, seed=3)
    saved = rule.carry_state_dict(first.carry)
    resumed = run_sequence(rule, model, xs, ys, obj, carry=rule.load_carry_state_dict(model, saved))
    assert subset_of(resumed.grads) == draws[1]


def test_ottt_and_sltt_learn_with_the_trainer():
    torch.manual_seed(10)
    for rule in (OTTT(chunk_size=1), OTTT(), SLTT(), SLTT(k=4)):
        torch.manual_seed(10)
        model = cg.cells.spiking_mlp((5, 16, 2), tau_mem=4.0, threshold=0.5)
        xs = torch.rand(T, 8, 5) * 1.5
        ys = torch.stack([xs[..., :2].mean(-1), xs[..., 2:].mean(-1)], -1)
        trainer = cg.training.Trainer(model, rule, Objective("mse"), lr=2e-2)
        hist = trainer.fit([(xs, ys)], epochs=25)
        assert hist.last("loss") < 0.5 * hist["loss"][0], type(rule).__name__


class BufferBiasCell(Cell):
    def __init__(self):
        super().__init__()
        self.input_size = self.output_size = 3
        self.w = nn.Parameter(torch.randn(3, 3, dtype=D))
        self.register_buffer("b", torch.ones(3, dtype=D))
        self.register_buffer("alpha", torch.tensor(0.5, dtype=D))

    def init_state(self, batch_size, *, device=None, dtype=None):
        return (torch.zeros(batch_size, 3, dtype=D),)

    def forward(self, x, state):
        h = self.alpha * state[0] + F.linear(x, self.w, self.b)
        return h, (h,)


class LeftCell(BufferBiasCell):
    def forward(self, x, state):
        h = self.alpha * state[0] + (self.w @ x.T).T
        return h, (h,)


def test_unsupported_models_and_options_raise():
    xs, ys = torch.rand(4, 2, 4, dtype=D), torch.randn(4, 2, 2, dtype=D)
    gru = Stack(GRU(4, 5), LeakyReadout(5, 2)).double()
    with pytest.raises(TypeError, match="decay"):
        OTTT().check_model(gru)
    with pytest.raises(TypeError, match="decay"):
        cg.gradient(OTTT(), gru, xs, ys, Objective("mse"))
    cg.gradient(OTTT(decay=0.5), gru, xs, ys, Objective("mse"))  # explicit decay: fine
    xs3, ys3 = torch.rand(4, 2, 3, dtype=D), torch.randn(4, 2, 3, dtype=D)
    with pytest.raises(TypeError, match="bias that is not a model parameter"):
        cg.gradient(OTTT(), BufferBiasCell(), xs3, ys3, Objective("mse"))
    with pytest.raises(TypeError, match="from the left"):
        cg.gradient(OTTT(), LeftCell(), xs3, ys3, Objective("mse"))
    with pytest.raises(ValueError, match="chunk_size=1"):
        SLTT(k=2, chunk_size=1)
    with pytest.raises(ValueError, match="positive int"):
        SLTT(k=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        OTTT(decay=1.5)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        OTTT(chunk_size=0)
    with pytest.raises(TypeError):
        OTTT(lambda_=0.5)  # unknown option
    with pytest.raises(ValueError, match="plain SLTT"):
        SLTT().load_carry_state_dict(gru, {})
    assert cg.rules.get("ottt") == OTTT() and cg.rules.get("sltt", k=3) == SLTT(k=3)


def test_surrogate_is_used_by_the_hand_formula():
    """Guard for the hand formula: LIF's default surrogate is the γ = 0.3 triangle."""
    assert LIF(2, 2).surrogate == Triangle()


def test_ottt_setup_leaves_the_random_stream_alone():
    """OTTT.init probes one step (init_state may draw a dropout mask): the generator is restored."""
    model = cg.cells.spiking_mlp((5, 8, 3), dropout=0.5).double()
    torch.manual_seed(11)
    OTTT().init(model, None)
    after = torch.rand(3)
    torch.manual_seed(11)
    torch.testing.assert_close(after, torch.rand(3))
