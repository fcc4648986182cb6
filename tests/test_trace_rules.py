"""Oracles of RTRL, D-RTRL and pp-prop (float64) and their options."""

import pytest
import torch
from torch import nn

import chronograd as cg
from chronograd.cells import (
    ALIF,
    GRU,
    LIF,
    DiagonalRNN,
    LeakyReadout,
    LeakyRNN,
    Map,
    Stack,
    SynapticLIF,
)
from chronograd.rules import DRTRL, ESDRTRL, RTRL, TBPTT, PPProp, get
from chronograd.testing import assert_matches_bptt, gradient_alignment
from chronograd.training import Trainer

D = torch.float64
T, B = 10, 3
MSE = cg.Objective("mse")


def data(i=4, o=2, T=T, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, i, generator=g, dtype=D) * 2, torch.randn(T, B, o, generator=g, dtype=D)


def net(core, h=6, kappa=0.0):
    return Stack(core, LeakyReadout(h, 2, kappa=kappa)).double()


SPIKE = dict(tau_mem=4.0, threshold=0.5)
RECURRENT = {
    "rnn": lambda: net(LeakyRNN(4, 6, alpha=0.3)),
    "gru": lambda: net(GRU(4, 6)),
    "lif": lambda: net(LIF(4, 6, **SPIKE)),
    "alif": lambda: net(ALIF(4, 6, tau_adapt=8.0, beta=0.3, **SPIKE)),
    "synaptic": lambda: net(SynapticLIF(4, 6, **SPIKE)),
    "deep": lambda: Stack(LeakyRNN(4, 5), GRU(5, 4), LeakyReadout(4, 2, kappa=0.5)).double(),
}
ELEMENTWISE = {
    "rnn": lambda: net(LeakyRNN(4, 6, alpha=0.3, recurrent=False)),
    "lif": lambda: net(LIF(4, 6, recurrent=False, **SPIKE)),
    "alif": lambda: net(ALIF(4, 6, recurrent=False, tau_adapt=8.0, beta=0.3, **SPIKE)),
    "synaptic": lambda: net(SynapticLIF(4, 6, recurrent=False, **SPIKE)),
    "diagonal": lambda: net(DiagonalRNN(4, 6, activation="tanh")),
    "mapped": lambda: Stack(DiagonalRNN(4, 6), Map(nn.Tanh(), 6, 6), LeakyReadout(6, 2)).double(),
}
STACKED = lambda: Stack(  # noqa: E731 - two stateful layers: layer 1's memory is not traced
    DiagonalRNN(4, 5), LIF(5, 6, recurrent=False, **SPIKE), LeakyReadout(6, 2)
).double()


EVERY = {
    **RECURRENT,
    "diagonal": ELEMENTWISE["diagonal"],
    "readout": lambda: LeakyReadout(4, 2, kappa=0.7).double(),
}


@pytest.mark.parametrize("name", list(EVERY))
def test_rtrl_equals_bptt_on_every_cell(name):
    torch.manual_seed(0)
    model = EVERY[name]()
    xs, ys = data()
    assert_matches_bptt(RTRL(), model, xs, ys, MSE, rtol=1e-8, atol=1e-11)


def test_rtrl_is_exact_across_chunks_and_is_not_snntorchs_rtrl():
    torch.manual_seed(0)
    model, (xs, ys) = RECURRENT["rnn"](), data()
    summed = cg.Objective("mse", reduction="sum")  # chunk windows then add up to the sequence
    assert_matches_bptt(RTRL(chunk_size=3, directions=17), model, xs, ys, summed, rtol=1e-8)
    # snnTorch's "RTRL" truncates to one step (TBPTT(1)): a different gradient here
    snn = cg.gradient(TBPTT(1), model, xs, ys, MSE)["layers.0.recurrent.weight"]
    rtrl = cg.gradient(RTRL(), model, xs, ys, MSE)["layers.0.recurrent.weight"]
    assert (snn - rtrl).norm() > 0.1 * rtrl.norm()


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_drtrl_equals_bptt_without_recurrent_weights(name):
    torch.manual_seed(0)
    model, (xs, ys) = ELEMENTWISE[name](), data()
    assert_matches_bptt(DRTRL(), model, xs, ys, MSE, rtol=1e-8, atol=1e-11)
    assert_matches_bptt(DRTRL(), model, xs, ys, cg.Objective("mse", last=3), rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("name", ["diagonal", "alif", "synaptic"])
def test_drtrl_equals_rtrl_when_the_jacobian_is_block_diagonal(name):
    torch.manual_seed(0)
    cell = ELEMENTWISE[name]().layers[0]
    xs, _ = data()
    ys = torch.randn(T, B, 6, dtype=D)
    a, b = cg.gradient(DRTRL(), cell, xs, ys, MSE), cg.gradient(RTRL(), cell, xs, ys, MSE)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-8, atol=1e-12)


def test_memory_of_a_later_group_is_not_propagated_upstream_but_its_weights_stay_exact():
    torch.manual_seed(0)
    xs, ys = data()
    leaky = net(LIF(4, 6, recurrent=False, **SPIKE), kappa=0.8)  # e-prop's F_κ is not applied
    for model, exact, approx in (
        (leaky, ("layers.1.input.weight", "layers.1.input.bias"), "layers.0.input.weight"),
        (STACKED(), ("layers.1.input.weight", "layers.2.input.weight"), "layers.0.input.weight"),
    ):
        g, r = cg.gradient(DRTRL(), model, xs, ys, MSE), cg.gradient(cg.BPTT(), model, xs, ys, MSE)
        for n in exact:
            torch.testing.assert_close(g[n], r[n], rtol=1e-8, atol=1e-12)
        assert (g[approx] - r[approx]).norm() > 0.01 * r[approx].norm()


@pytest.mark.parametrize("name", ["rnn", "gru", "lif", "alif", "synaptic", "deep"])
def test_pp_prop_with_decay_zero_is_tbptt1_for_relations(name):
    torch.manual_seed(0)
    model, (xs, ys) = RECURRENT[name](), data()
    summed = cg.Objective("mse", reduction="sum")  # TBPTT(1) normalises per one-step window
    g = cg.gradient(PPProp(decay=0.0), model, xs, ys, summed)
    r = cg.gradient(TBPTT(1), model, xs, ys, summed)
    for n in g:
        torch.testing.assert_close(g[n], r[n], rtol=1e-8, atol=1e-12)


def test_pp_prop_bias_correction_and_rank():
    assert PPProp(rank=3).alpha == 0.5 and ESDRTRL is PPProp and get("pp-prop").alpha == 0.9
    torch.manual_seed(0)
    # one leaky identity unit (d = 0.5, Df = 0.5) driven by z = 1, loss at the last of 3 steps:
    # the pp-prop formula by hand, bias correction c_2 = 1 - α³ included
    cell = LeakyRNN(1, 1, alpha=0.5, activation="identity", recurrent=False, bias=False).double()
    xs = torch.ones(3, 1, 1, dtype=D)
    ys = torch.zeros(3, 1, 1, dtype=D)
    obj = cg.Objective("mse", reduction="sum", last=1)
    a = 0.6
    g = cg.gradient(PPProp(decay=a), cell, xs, ys, obj)["input.weight"]
    w = float(cell.input.weight.detach())
    h = [0.5 * w]
    for _ in range(2):
        h.append(0.5 * h[-1] + 0.5 * w)
    ex = 1 + a + a * a  # z = 1 every step
    ef = (1 - a) * 0.5 * (1 + a * 0.5 + (a * 0.5) ** 2)
    want = 2 * h[-1] * ex * ef / (1 - a**3)
    torch.testing.assert_close(g, torch.tensor([[want]], dtype=D), rtol=1e-12, atol=0)


def test_gradient_alignment_regression():
    """Pinned cosine / relative error of all parameters vs BPTT (abs. tolerance 2e-6)."""
    torch.manual_seed(42)
    gru = Stack(GRU(3, 8), LeakyReadout(8, 2)).double()
    lif = Stack(LIF(3, 8, tau_mem=5.0, threshold=0.5), LeakyReadout(8, 2, kappa=0.5)).double()
    g = torch.Generator().manual_seed(7)
    xs = torch.rand(16, 4, 3, generator=g, dtype=D) * 2
    ys = torch.randn(16, 4, 2, generator=g, dtype=D)
    got = {}
    for mname, model in (("gru", gru), ("lif", lif)):
        for rname, rule in (("drtrl", DRTRL()), ("pp-prop", PPProp(decay=0.5))):
            a = gradient_alignment(rule, model, xs, ys, MSE)["all"]
            got[(mname, rname)] = (round(a.cosine, 6), round(a.rel_error, 6))
    want = {
        ("gru", "drtrl"): (0.984437, 0.177578),
        ("gru", "pp-prop"): (0.940064, 0.422682),
        ("lif", "drtrl"): (0.997374, 0.072712),
        ("lif", "pp-prop"): (0.975167, 0.404443),
    }
    for k, (cos, rel) in want.items():
        assert got[k][0] == pytest.approx(cos, abs=2e-6), (k, got[k])
        assert got[k][1] == pytest.approx(rel, abs=2e-6), (k, got[k])


@pytest.mark.parametrize("rule", [RTRL(), DRTRL(), DRTRL(mode="previous-state"), PPProp(decay=0.6)])
def test_streaming_in_chunks_gives_the_one_chunk_gradient(rule):
    torch.manual_seed(0)
    model, (xs, ys) = RECURRENT["alif"](), data(T=11)
    whole = cg.gradient(rule, model, xs, ys, MSE)
    chunked = type(rule)(**{**_opts(rule), "chunk_size": 4})
    parts = cg.gradient(chunked, model, xs, ys, cg.Objective("mse", reduction="sum"))
    whole_sum = cg.gradient(rule, model, xs, ys, cg.Objective("mse", reduction="sum"))
    for n in whole:
        torch.testing.assert_close(parts[n], whole_sum[n], rtol=1e-9, atol=1e-12)
        assert whole[n].shape == model.get_parameter(n).shape


def _opts(rule):
    return {k: getattr(rule, k) for k in ("mode", "decay", "rank") if hasattr(rule, k)}


def test_chunk_losses_sum_to_the_window_loss_and_penalty_is_added_once_per_update():
    torch.manual_seed(0)
    model, (xs, ys) = ELEMENTWISE["lif"](), data()
    w = model.layers[1].input.weight
    obj = cg.Objective("mse", regularizers=[lambda: 0.5 * (w**2).sum()])
    assert_matches_bptt(DRTRL(), model, xs, ys, obj, rtol=1e-8, atol=1e-12)
    steps = []
    cg.run_sequence(DRTRL(chunk_size=4), model, xs, ys, obj,
                    on_chunk_end=lambda span, step: steps.append((span, step)))  # fmt: skip
    for span, step in steps:
        out, _ = cg.unroll(model, xs[: span.stop])
        want = obj.loss(out[span.start :], ys[span.start : span.stop], start=span.start, total=T)
        torch.testing.assert_close(step.loss, want.detach())
    full = cg.gradient(DRTRL(chunk_size=4), model, xs, ys, obj)
    plain = cg.gradient(DRTRL(chunk_size=4), model, xs, ys, cg.Objective("mse"))
    torch.testing.assert_close(
        full["layers.1.input.weight"] - plain["layers.1.input.weight"], 3 * w.detach()
    )


def test_trace_dtype_and_options():
    torch.manual_seed(0)
    model, (xs, ys) = ELEMENTWISE["alif"](), data()
    a = cg.gradient(DRTRL(trace_dtype="float32"), model, xs, ys, MSE)
    b = cg.gradient(DRTRL(), model, xs, ys, MSE)
    c = cg.gradient(PPProp(trace_dtype=torch.float32), model, xs, ys, MSE)
    r32 = cg.gradient(RTRL(trace_dtype="float32"), model, xs, ys, MSE)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(r32[n], b[n], rtol=1e-4, atol=1e-6)  # exact here: RTRL == DRTRL
        assert a[n].dtype == D and c[n].dtype == D and r32[n].dtype == D
    with pytest.raises(ValueError, match="mode"):
        DRTRL(mode="both")
    with pytest.raises(ValueError, match="chunk_size"):
        PPProp(chunk_size=0)
    with pytest.raises(ValueError, match="either decay or rank"):
        PPProp(decay=0.5, rank=3)
    with pytest.raises(ValueError, match="trace_dtype"):
        DRTRL(trace_dtype="int8")
    with pytest.raises(TypeError):
        get("drtrl", decay=0.5)
    assert isinstance(get("rtrl"), RTRL) and isinstance(get("drtrl", mode="previous-state"), DRTRL)


def test_frozen_relations_are_cut_and_only_trained_parameters_get_gradients():
    torch.manual_seed(0)
    model, (xs, ys) = STACKED(), data()
    rule = DRTRL(params=("layers.1.*",))  # the readout is frozen: δ still crosses it
    g = cg.gradient(rule, model, xs, ys, MSE)
    assert set(g) == {"layers.1.input.weight"}
    assert_matches_bptt(rule, model, xs, ys, MSE, rtol=1e-8, atol=1e-12)
    out_only = Stack(LIF(4, 6, recurrent=False, **SPIKE), Map(nn.Linear(6, 2))).double()
    assert_matches_bptt(DRTRL(), out_only, xs, ys, MSE, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize(
    ("rule", "accumulate"),
    [(RTRL(chunk_size=5), False), (DRTRL(chunk_size=5), False), (PPProp(chunk_size=5), True)],
)
def test_trainer_trains_with_each_rule(rule, accumulate):
    torch.manual_seed(0)
    model = Stack(LeakyRNN(2, 6, alpha=0.5), LeakyReadout(6, 1)).double()
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(3, 10, 8, 2, generator=g, dtype=D)
    fixed = [(x, torch.tanh(x[..., :1] - 0.5 * x[..., 1:])) for x in xs]

    trainer = Trainer(
        model, rule, cg.Objective("mse"), lr=3e-2, progress=False, accumulate=accumulate
    )
    history = trainer.fit(lambda epoch: fixed, epochs=6)
    losses = [r["loss"] for r in history.records]
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("block", [1, 3])
def test_blocked_trace_advance_is_the_per_step_recursion(block, monkeypatch):
    """The engine runs blocks of steps (and D-RTRL advances its traces per block): any block
    size gives the same gradient."""
    import chronograd.traces.chunk as traces

    torch.manual_seed(0)
    xs, ys = data(T=11)
    obj = cg.Objective("mse", reduction="sum", mask=(torch.arange(11) % 3 != 1).double())
    for model in (
        ELEMENTWISE["synaptic"](),
        RECURRENT["alif"](),
        RECURRENT["gru"](),
        EVERY["diagonal"](),
    ):
        for rule in (DRTRL(), DRTRL(mode="previous-state", chunk_size=5), PPProp(decay=0.7)):
            want = cg.gradient(rule, model, xs, ys, obj)
            monkeypatch.setattr(traces, "BLOCK", block)
            got = cg.gradient(rule, model, xs, ys, obj)
            monkeypatch.undo()
            for n in want:
                torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-13)


@pytest.mark.gpu
def test_rules_on_cuda_match_the_cpu():
    torch.manual_seed(0)
    model, (xs, ys) = RECURRENT["alif"](), data()
    for rule in (RTRL(), DRTRL(), PPProp(decay=0.5)):
        cpu = cg.gradient(rule, model, xs, ys, MSE)
        gpu = cg.gradient(rule, model.to("cuda"), xs.cuda(), ys.cuda(), MSE)
        model.to("cpu")
        for n in cpu:
            assert gpu[n].device.type == "cuda"
            torch.testing.assert_close(gpu[n].cpu(), cpu[n], rtol=1e-9, atol=1e-12)


def test_cli_trains_with_a_trace_rule_and_chunk(tmp_path):
    from chronograd.cli import main

    out = tmp_path / "run"
    code = main(["train", "--task", "evidence", "--rule", "pp-prop", "--chunk", "40", "--cell", "lif",
                 "--hidden", "8", "--epochs", "1", "--task-opt", "batches_per_epoch=1",
                 "--task-opt", "batch_size=4", "--task-opt", "val_batches=1",
                 "--task-opt", "time_scale=0.05", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0 and (out / "metrics.json").exists()
