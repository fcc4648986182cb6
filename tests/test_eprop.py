"""e-prop's gradient (float64 oracles): exact without recurrence, == the generic trace engine
with a filtered readout, == the paper's equations computed by hand, reverse == traces."""

import pytest
import torch

import chronograd as cg
from chronograd.cells import ALIF, GRU, LIF, LeakyReadout, LeakyRNN, Map, Stack, lsnn_beta
from chronograd.rules import BPTT, DRTRL, EProp
from chronograd.traces.eprop_network import layout

D = torch.float64


def spiking(cell="alif", recurrent=True, detach_reset=True, H=5, I=3, O=2, kappa=0.7, bias=False):
    torch.manual_seed(0)
    if cell == "lif":
        core = LIF(I, H, recurrent=recurrent, tau_mem=4.0, threshold=0.5,
                   detach_reset=detach_reset, bias=bias)  # fmt: skip
    else:
        beta = lsnn_beta(H // 2, H - H // 2, 1.0)
        core = ALIF(I, H, recurrent=recurrent, tau_mem=4.0, tau_adapt=6.0, beta=beta,
                    threshold=0.5, detach_reset=detach_reset, bias=bias)  # fmt: skip
    return Stack(core, LeakyReadout(H, O, kappa=kappa)).double()


def data(T=24, B=4, I=3, O=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, I, generator=g, dtype=D) * 2, torch.randn(T, B, O, generator=g, dtype=D)


def close(a, b, rtol=1e-10):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=1e-12, msg=k)


def nonzero(grads):
    assert all(float(g.abs().sum()) > 0 for g in grads.values()), "a test gradient vanished"


# -- exact where e-prop's only approximation (the recurrent path) is absent ----------------------
@pytest.mark.parametrize("cell", ["lif", "alif"])
@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("method", ["traces", "reverse"])
def test_symmetric_eprop_without_recurrent_weights_equals_bptt(cell, detach_reset, method):
    model = spiking(cell, recurrent=False, detach_reset=detach_reset, bias=True)
    xs, ys = data()
    obj = cg.Objective("mse")
    want = cg.gradient(BPTT(), model, xs, ys, obj)
    got = cg.gradient(EProp(method=method), model, xs, ys, obj)
    nonzero(want)
    close(got, want)


def test_symmetric_eprop_with_cross_entropy_and_a_recall_window_equals_bptt():
    model = spiking("alif", recurrent=False)
    xs, _ = data()
    labels = torch.tensor([0, 1, 1, 0]).expand(24, 4)
    obj = cg.Objective("cross_entropy", last=6)
    close(cg.gradient(EProp(), model, xs, labels, obj), cg.gradient(BPTT(), model, xs, labels, obj))
    # chunks: each window is its own mean; with sums the windows add up to the sequence
    obj = cg.Objective("cross_entropy", last=6, reduction="sum")
    want = cg.gradient(BPTT(), model, xs, labels, obj)
    close(cg.gradient(EProp(chunk_size=5), model, xs, labels, obj), want)


# -- == the generic trace engine, readout filtered ------------------------------------------------
@pytest.mark.parametrize("cell", ["lif", "alif"])
@pytest.mark.parametrize("chunk", [None, 5])
@pytest.mark.parametrize("detach_reset", [True, False])
def test_symmetric_eprop_equals_drtrl_with_readout_filter(cell, chunk, detach_reset):
    model = spiking(cell, bias=True, detach_reset=detach_reset)  # T = 40: two engine blocks
    xs, ys = data(T=40)
    obj = cg.Objective("mse")
    got = cg.gradient(EProp(chunk_size=chunk), model, xs, ys, obj)
    want = cg.gradient(DRTRL(readout="filter", chunk_size=chunk), model, xs, ys, obj)
    nonzero(want)
    close(got, want)
    plain = cg.gradient(DRTRL(chunk_size=chunk), model, xs, ys, obj)  # readout memory dropped
    assert not torch.allclose(plain["layers.0.input.weight"], got["layers.0.input.weight"])


def test_drtrl_readout_filter_is_exact_for_any_cell_without_recurrence():
    """The filter handles the readout exactly for the layer feeding it, whatever the cell."""
    torch.manual_seed(0)
    model = Stack(LeakyRNN(3, 6, alpha=0.5, recurrent=False), LeakyReadout(6, 2, kappa=0.8))
    model = model.double()
    xs, ys = torch.randn(20, 3, 3, dtype=D), torch.randn(20, 3, 2, dtype=D)
    obj = cg.Objective("mse", reduction="sum")
    want = cg.gradient(BPTT(), model, xs, ys, obj)
    close(cg.gradient(DRTRL(readout="filter"), model, xs, ys, obj), want)
    close(cg.gradient(DRTRL(readout="filter", chunk_size=7), model, xs, ys, obj), want)
    plain = cg.gradient(DRTRL(), model, xs, ys, obj)
    assert not torch.allclose(plain["layers.0.input.weight"], want["layers.0.input.weight"])


def test_drtrl_readout_filter_with_kappa_zero_is_the_default():
    model = spiking("lif", kappa=0.0)
    xs, ys = data()
    obj = cg.Objective("mse")
    close(
        cg.gradient(DRTRL(readout="filter"), model, xs, ys, obj),
        cg.gradient(DRTRL(), model, xs, ys, obj),
    )


def test_drtrl_readout_filter_refuses_models_it_cannot_filter():
    with pytest.raises(ValueError, match="readout must be 'state' or 'filter'"):
        DRTRL(readout="exact")
    rule = DRTRL(readout="filter")
    with pytest.raises(TypeError, match="without a LeakyReadout as its last layer"):
        rule.check_model(Stack(LeakyRNN(3, 4), Map(torch.nn.Linear(4, 2))))
    mixing = Stack(LeakyRNN(3, 4), Map(torch.nn.Linear(4, 4)), LeakyReadout(4, 2, kappa=0.5))
    with pytest.raises(TypeError, match="got Map, whose output is not a tensor of its state"):
        rule.check_model(mixing)
    with pytest.raises(TypeError, match="output mixes neurons' states"):
        rule.check_model(Stack(Mixer(), LeakyReadout(4, 2, kappa=0.5)))
    rule.check_model(Stack(GRU(3, 4), LeakyReadout(4, 2, kappa=0.5)))  # any cell is fine


class Mixer(torch.nn.Module):
    """A cell whose output mixes its neurons' states (``tanh(h) @ M``)."""

    input_size, output_size = 3, 4

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.register_buffer("m", torch.randn(4, 4))

    def init_state(self, batch_size, *, device=None, dtype=None):
        return (torch.zeros(batch_size, 4, device=device, dtype=dtype),)

    def forward(self, x, state):
        h = 0.5 * state[0] + self.lin(x)
        return torch.tanh(h) @ self.m, (h,)


# -- the paper's equations by hand -----------------------------------------------------------------
def hand_eprop(model, xs, ys, B_fb, rate=None, clip=None):
    """e-prop for ALIF (LIF neurons: β = 0) written with scalar loops from Bellec et al. 2020.

    Objective: MSE (mean over outputs) with reduction="sum", so ∂ℓ_t/∂y = 2 (y - y*) / O.
    """
    cell, ro = model.layers
    w_in, w_rec = cell.input.weight.detach(), cell.recurrent.weight.detach()
    w_out, b_out = ro.input.weight.detach(), ro.input.bias.detach()
    al, rho, th, kap = float(cell.alpha), float(cell.rho), cell.threshold, ro.kappa
    beta = [float(b) for b in cell.beta]
    T, Bn, I = xs.shape
    H, O = w_in.shape[0], w_out.shape[0]
    g_in, g_rec = torch.zeros(H, I, dtype=D), torch.zeros(H, H, dtype=D)
    g_out, g_b = torch.zeros(O, H, dtype=D), torch.zeros(O, dtype=D)
    e_sum_in, e_sum_rec = torch.zeros(H, I, dtype=D), torch.zeros(H, H, dtype=D)
    spikes = torch.zeros(H, dtype=D)
    for b in range(Bn):
        v, a, y = [0.0] * H, [0.0] * H, [0.0] * O
        z_prev = [0.0] * H
        zb_in, zb_rec = [0.0] * I, [0.0] * H  # presynaptic traces z̄
        ea_in = [[0.0] * I for _ in range(H)]  # ε^a_t, per (j, i)
        ea_rec = [[0.0] * H for _ in range(H)]
        F_in = [[0.0] * I for _ in range(H)]
        F_rec = [[0.0] * H for _ in range(H)]
        zk, ck = [0.0] * H, 0.0
        for t in range(T):
            x = [float(xs[t, b, i]) for i in range(I)]
            z, psi = [0.0] * H, [0.0] * H
            for j in range(H):
                cur = sum(float(w_in[j, i]) * x[i] for i in range(I))
                cur += sum(float(w_rec[j, k]) * z_prev[k] for k in range(H))
                a[j] = rho * a[j] + z_prev[j]
                v[j] = al * v[j] + cur - z_prev[j] * th
                A = th + beta[j] * a[j]
                z[j] = 1.0 if (v[j] - A) / th > 0 else 0.0
                psi[j] = 0.3 / th * max(0.0, 1 - abs(v[j] - A) / th)
            zb_in = [al * zb_in[i] + x[i] for i in range(I)]
            zb_rec = [al * zb_rec[k] + z_prev[k] for k in range(H)]
            y = [kap * y[o] + sum(float(w_out[o, j]) * z[j] for j in range(H)) + float(b_out[o])
                 for o in range(O)]  # fmt: skip
            dy = [2 * (y[o] - float(ys[t, b, o])) / O for o in range(O)]
            L = [sum(float(B_fb[j, o]) * dy[o] for o in range(O)) for j in range(H)]
            zk = [kap * zk[j] + z[j] for j in range(H)]
            ck = kap * ck + 1
            for o in range(O):
                g_b[o] += dy[o] * ck
                for j in range(H):
                    g_out[o, j] += dy[o] * zk[j]
            for zb, ea, F, g, es in ((zb_in, ea_in, F_in, g_in, e_sum_in),
                                     (zb_rec, ea_rec, F_rec, g_rec, e_sum_rec)):  # fmt: skip
                for j in range(H):
                    for i in range(len(zb)):
                        e = psi[j] * (zb[i] - beta[j] * ea[j][i])  # e_t = ψ_t (z̄ − β ε^a_t)
                        ea[j][i] = psi[j] * zb[i] + (rho - psi[j] * beta[j]) * ea[j][i]
                        F[j][i] = kap * F[j][i] + e
                        es[j, i] += e
                if clip is not None:  # per sample and parameter, after each step
                    norm = sum(F[j][i] ** 2 for j in range(H) for i in range(len(zb))) ** 0.5
                    s = min(1.0, clip / norm) if norm > 0 else 1.0
                    for j in range(H):
                        F[j] = [f * s for f in F[j]]
                for j in range(H):
                    for i in range(len(zb)):
                        g[j, i] += L[j] * F[j][i]
            spikes += torch.tensor(z, dtype=D)
            z_prev = z
    if rate is not None:
        target, c = rate
        R = 2 * c * (spikes / (T * Bn) - target) / (T * Bn)  # ∂E_reg/∂z_{b,t,j}
        g_in += R[:, None] * e_sum_in
        g_rec += R[:, None] * e_sum_rec
    return {
        "layers.0.input.weight": g_in,
        "layers.0.recurrent.weight": g_rec,
        "layers.1.input.weight": g_out,
        "layers.1.input.bias": g_b,
    }


def three_neurons(T=5, Bn=2):
    torch.manual_seed(3)
    model = spiking("alif", H=3, I=2, O=2, kappa=0.6)
    with torch.no_grad():
        model.layers[0].recurrent.weight.mul_(2.0)
    g = torch.Generator().manual_seed(4)
    xs = torch.rand(T, Bn, 2, generator=g, dtype=D) * 1.5
    ys = torch.randn(T, Bn, 2, generator=g, dtype=D)
    return model, xs, ys


@pytest.mark.parametrize("method", ["traces", "reverse"])
def test_random_eprop_equals_the_paper_equations_by_hand(method):
    model, xs, ys = three_neurons()
    rule = EProp(feedback="random", feedback_init="randn", feedback_seed=5, method=method)
    carry = rule.init(model, model.init_state(2, dtype=D))
    B_fb = carry.feedback
    assert B_fb.shape == (3, 2)
    want = hand_eprop(model, xs, ys, B_fb)
    nonzero(want)
    got = cg.run_sequence(rule, model, xs, ys, cg.Objective("mse", reduction="sum"), carry=carry)
    close(got.grads, want)


def test_firing_rate_regularizer_and_trace_clipping_by_hand():
    model, xs, ys = three_neurons(T=6)
    obj = cg.Objective("mse", reduction="sum")
    for opts, rate, clip in (
        (dict(rate_target=0.2, rate_reg=3.0), (0.2, 3.0), None),
        (dict(trace_norm_clip=0.05), None, 0.05),
        (dict(rate_target=0.1, trace_norm_clip=0.05), (0.1, 1.0), 0.05),
    ):
        rule = EProp(feedback="random", feedback_seed=2, **opts)
        carry = rule.init(model, model.init_state(2, dtype=D))
        want = hand_eprop(model, xs, ys, carry.feedback, rate=rate, clip=clip)
        got = cg.run_sequence(rule, model, xs, ys, obj, carry=carry).grads
        close(got, want)
    base = cg.gradient(EProp(feedback="random", feedback_seed=2), model, xs, ys, obj)
    clipped = cg.gradient(EProp(feedback="random", feedback_seed=2, trace_norm_clip=0.05),
                          model, xs, ys, obj)  # fmt: skip
    huge = cg.gradient(EProp(feedback="random", feedback_seed=2, trace_norm_clip=1e9),
                       model, xs, ys, obj)  # fmt: skip
    assert not torch.allclose(base["layers.0.input.weight"], clipped["layers.0.input.weight"])
    close(huge, base)


def test_clipped_traces_stay_within_the_bound():
    model, xs, ys = three_neurons(T=12)
    F = layout(model.layers[0], with_sum=False).F

    def norms(clip):
        rule = EProp(trace_norm_clip=clip, chunk_size=12)
        traces = cg.run_sequence(rule, model, xs, ys, cg.Objective("mse")).carry.traces
        return {k: torch.linalg.vector_norm(X[F].flatten(1), dim=1)
                for k, X in traces.items() if k.startswith("X:")}  # fmt: skip

    free, clipped = norms(1e9), norms(1e-4)
    assert set(clipped) == {"X:w_in", "X:w_rec"}
    assert float(free["X:w_in"].min()) > 1e-4  # the bound is active ...
    for n in clipped.values():  # ... and holds for every sample and parameter
        assert float(n.max()) <= 1e-4 * (1 + 1e-12)


# -- firing-rate regularizer: exact without recurrence, per window ---------------------------------
@pytest.mark.parametrize("chunk", [None, 8])
def test_firing_rate_gradient_equals_bptt_of_its_formula_without_recurrence(chunk):
    model = spiking("alif", recurrent=False, bias=True)
    xs, ys = data(T=24)
    obj = cg.Objective("mse", reduction="sum")
    target, c = 0.05, 2.0
    rule = EProp(rate_target=target, rate_reg=c, chunk_size=chunk)
    got = cg.gradient(rule, model, xs, ys, obj)
    plain = cg.gradient(EProp(chunk_size=chunk), model, xs, ys, obj)
    outs, _ = cg.unroll(model.layers[0], xs)  # spikes z (T, B, H), with surrogate gradients
    T = xs.shape[0]
    k = chunk or T
    reg = sum(c * ((outs[s : s + k].mean((0, 1)) - target) ** 2).sum() for s in range(0, T, k))
    named = dict(model.named_parameters())
    for n in ("layers.0.input.weight", "layers.0.input.bias"):
        (g,) = torch.autograd.grad(reg, [named[n]], retain_graph=True)
        assert float(g.abs().sum()) > 0
        torch.testing.assert_close(got[n] - plain[n], g, rtol=1e-9, atol=1e-12)


# -- chunks: traces carry across windows --------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 4, 7])
@pytest.mark.parametrize("detach_reset", [True, False])
def test_chunk_gradients_sum_to_the_sequence_gradient(chunk, detach_reset):
    model = spiking("alif", bias=True, detach_reset=detach_reset)
    xs, ys = data(T=40)
    obj = cg.Objective("mse", reduction="sum")  # the same per-step weights in every window
    for fb in ("symmetric", "random"):
        whole = cg.gradient(EProp(feedback=fb), model, xs, ys, obj)
        close(cg.gradient(EProp(feedback=fb, chunk_size=chunk), model, xs, ys, obj), whole)


def test_traces_and_reverse_agree_with_a_trace_dtype_and_float32():
    model = spiking("alif", bias=True).float()
    DRTRL(readout="filter").check_model(model)  # the element-wise probe runs in float64
    xs, ys = data(T=30)
    xs, ys = xs.float(), ys.float()
    obj = cg.Objective("mse")
    a = cg.gradient(EProp(method="reverse"), model, xs, ys, obj)
    b = cg.gradient(EProp(method="traces", trace_dtype="float64"), model, xs, ys, obj)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
