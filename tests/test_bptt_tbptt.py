import pytest
import torch
from torch.func import functional_call

import chronograd as cg
from chronograd import BPTT, TBPTT, Objective
from chronograd.cells import GRU, LIF, LeakyReadout, LeakyRNN, Stack
from chronograd.testing import assert_matches_bptt
from chronograd.training import apply_to_model, run_sequence
from chronograd.transforms import clip_by_global_norm
from chronograd.transforms import ema as ema_transform

D = torch.float64
T, B = 24, 3


def lif_net():
    return Stack(LIF(4, 10, tau_mem=5.0), LeakyReadout(10, 2, kappa=0.6)).double()


def rnn_net():
    return Stack(LeakyRNN(4, 10, alpha=0.2), LeakyReadout(10, 2)).double()


def data():
    return torch.rand(T, B, 4, dtype=D) * 2, torch.randn(T, B, 2, dtype=D)


@pytest.mark.parametrize(
    "make", [lif_net, rnn_net, lambda: Stack(GRU(4, 6), LeakyReadout(6, 2)).double()]
)
def test_tbptt_over_the_whole_sequence_is_bptt(make):
    model, (xs, ys) = make(), data()
    assert_matches_bptt(TBPTT(T), model, xs, ys, Objective("mse"), rtol=1e-12)
    assert_matches_bptt(TBPTT(T, T), model, xs, ys, Objective("mse", last=5), rtol=1e-12)


def test_each_chunk_gradient_is_bptt_of_that_chunk_from_the_detached_state():
    model, (xs, ys) = lif_net(), data()
    obj = Objective("mse")
    k = 7
    steps = []
    run_sequence(
        TBPTT(k), model, xs, ys, obj, on_chunk_end=lambda span, step: steps.append((span, step))
    )
    assert [s.length for s, _ in steps] == [7, 7, 7, 3]
    state = model.init_state(B, dtype=D)
    for span, step in steps:
        g = cg.gradient(
            BPTT(), model, xs[span.start : span.stop], ys[span.start : span.stop], obj, state=state
        )
        for n in g:
            torch.testing.assert_close(step.grads[n], g[n], rtol=1e-12, atol=1e-14)
        _, state = cg.unroll(model, xs[span.start : span.stop], state)
        state = cg.detach(state)


def _reference_tbptt(model, xs, ys, obj, k1, k2, lr):
    """Williams & Peng TBPTT(k1, k2) by hand: one forward pass with per-step graphs, each chunk
    run with its own leaf copy of the weights, backward chained by hand through k2 steps."""
    names = [n for n, _ in model.named_parameters()]
    live = dict(model.named_parameters())
    state = model.init_state(B, dtype=D)
    segs, grads_per_update = [], []
    for start in range(0, T, k1):
        stop = min(start + k1, T)
        w = {n: live[n].detach().clone().requires_grad_() for n in names}
        for t in range(start, stop):
            s_in = cg._tree.tree_map(lambda v: v.detach().requires_grad_(), state)
            y, s_out = functional_call(model, w, (xs[t], s_in))
            segs.append((s_in, s_out, y, w))
            state = s_out
        # backward: loss of steps [start, stop) through steps [start - (k2 - k1), stop)
        acc = {n: torch.zeros_like(live[n]) for n in names}
        y_chunk = [segs[t][2] for t in range(start, stop)]
        loss = obj.loss(torch.stack(y_chunk), ys[start:stop], start=start, total=T)
        dy = torch.autograd.grad(loss, y_chunk, retain_graph=True)
        upstream = None
        for t in range(stop - 1, max(0, start - (k2 - k1)) - 1, -1):
            s_in, s_out, y, wt = segs[t]
            outs, gouts = [], []
            if upstream is not None:
                outs += cg._tree.tree_leaves(s_out)
                gouts += cg._tree.tree_leaves(upstream)
            if t >= start:
                outs.append(y)
                gouts.append(dy[t - start])
            s_leaves = cg._tree.tree_leaves(s_in)
            gs = torch.autograd.grad(
                outs, s_leaves + [wt[n] for n in names], gouts, retain_graph=True, allow_unused=True
            )
            ns = len(s_leaves)
            upstream = cg._tree.tree_unflatten(
                s_in, [torch.zeros_like(v) if g is None else g for g, v in zip(gs[:ns], s_leaves)]
            )
            for n, g in zip(names, gs[ns:]):
                if g is not None:
                    acc[n] += g
        grads_per_update.append(acc)
        with torch.no_grad():
            for n in names:
                live[n] -= lr * acc[n]
    return grads_per_update


@pytest.mark.parametrize("make", [lif_net, rnn_net])
def test_tbptt_k1_lt_k2_matches_hand_unrolled_reference_with_updates_between_chunks(make):
    torch.manual_seed(1)
    model, (xs, ys) = make(), data()
    ref_model = make()
    ref_model.load_state_dict(model.state_dict())
    obj = Objective("mse")
    lr = 0.05
    ref = _reference_tbptt(ref_model, xs, ys, obj, 5, 12, lr)

    got = []
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    apply = apply_to_model(model, opt)

    def record(update):
        got.append({n: g.clone() for n, g in update.grads.items()})
        apply(update)

    run_sequence(TBPTT(5, 12), model, xs, ys, obj, apply=record)
    assert len(got) == len(ref) == 5
    for g, r in zip(got, ref):
        for n in r:
            torch.testing.assert_close(g[n], r[n], rtol=1e-10, atol=1e-13)
    for n, p in ref_model.named_parameters():
        torch.testing.assert_close(dict(model.named_parameters())[n], p, rtol=1e-12, atol=1e-14)


def test_tbptt_k1_lt_k2_gradient_without_updates_is_truncated_bptt_per_chunk():
    model, (xs, ys) = rnn_net(), data()
    obj = Objective("mse")
    g = cg.gradient(TBPTT(4, 10), model, xs, ys, obj)
    ref = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    states = [model.init_state(B, dtype=D)]
    for t in range(T):
        _, s = model(xs[t], states[-1])
        states.append(cg.detach(s))
    for start in range(0, T, 4):
        stop, first = min(start + 4, T), max(0, start - 6)
        ys_hat, _ = cg.unroll(model, xs[first:stop], states[first])
        loss = obj.loss(ys_hat[start - first :], ys[start:stop], start=start, total=T)
        for n, gg in zip(ref, torch.autograd.grad(loss, list(model.parameters()))):
            ref[n] += gg
    for n in ref:
        torch.testing.assert_close(g[n], ref[n], rtol=1e-12, atol=1e-14)


def test_activation_checkpointing_gives_the_same_gradient():
    model, (xs, ys) = lif_net(), data()
    obj = Objective("mse")
    a = cg.gradient(BPTT(), model, xs, ys, obj)
    b = cg.gradient(BPTT(checkpoint=5), model, xs, ys, obj)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-12, atol=1e-15)


def test_params_option_trains_only_the_selected_parameters():
    model, (xs, ys) = lif_net(), data()
    g = cg.gradient(BPTT(params=("layers.1.*",)), model, xs, ys, Objective("mse"))
    assert set(g) == {"layers.1.input.weight", "layers.1.input.bias"}
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        cg.gradient(BPTT(params=("nothing*",)), model, xs, ys, Objective("mse"))


def test_accumulate_applies_one_summed_update_per_sequence():
    model, (xs, ys) = rnn_net(), data()
    calls = []
    res = run_sequence(
        TBPTT(5),
        model,
        xs,
        ys,
        Objective("mse"),
        apply=lambda up: calls.append(up.grads),
        accumulate=True,
    )
    assert len(calls) == 1 and res.n_updates == 1
    for n in res.grads:
        torch.testing.assert_close(calls[0][n], res.grads[n])


def test_clip_and_ema_postprocess_applied_gradients():
    model, (xs, ys) = rnn_net(), data()
    calls = []
    res = run_sequence(
        TBPTT(6),
        model,
        xs,
        ys,
        Objective("mse"),
        apply=lambda up: calls.append(up.grads),
        transform=clip_by_global_norm(1e-3),
    )
    for g in calls:
        norm = torch.sqrt(sum((v**2).sum() for v in g.values()))
        assert float(norm) <= 1e-3 * (1 + 1e-9)
    raw = []
    run_sequence(
        TBPTT(6), model, xs, ys, Objective("mse"), on_chunk_end=lambda s, st: raw.append(st.grads)
    )
    ema = []
    run_sequence(
        TBPTT(6),
        model,
        xs,
        ys,
        Objective("mse"),
        apply=lambda up: ema.append(up.grads),
        transform=ema_transform(0.5),
    )
    n = "layers.0.input.weight"
    m = 0.5 * 0 + 0.5 * raw[0][n]
    torch.testing.assert_close(ema[0][n], m / 0.5)
    m = 0.5 * m + 0.5 * raw[1][n]
    torch.testing.assert_close(ema[1][n], m / (1 - 0.25))
    assert res.n_updates == 4


def test_time_dim_option_moves_time_first_in_the_trainer():
    from chronograd.training import Trainer

    model, (xs, ys) = rnn_net(), data()
    trainer = Trainer(model, BPTT(), Objective("mse"), time_dim=1)
    batch = (xs.transpose(0, 1), ys.transpose(0, 1))
    x, y = trainer._prepare(batch)
    assert torch.equal(x, xs) and torch.equal(y, ys)


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: TBPTT(8, 4), "k1 <= k2"),
        (lambda: TBPTT(0), "k1 must be a positive int"),
        (lambda: TBPTT(k2=4), "set k1"),
        (lambda: clip_by_global_norm(0.0), "max_norm must be > 0"),
        (lambda: ema_transform(1.0), "beta must lie in"),
        (lambda: BPTT(checkpoint=0), "checkpoint must be a positive"),
    ],
)
def test_invalid_rule_options_raise(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_unknown_rule_options_raise():
    with pytest.raises(TypeError):
        BPTT(chunk=5)
    with pytest.raises(ValueError, match="unknown rule"):
        cg.rules.get("magic")
    assert isinstance(cg.rules.get("tbptt", chunk_size=3), TBPTT)


def test_mismatched_time_lengths_raise():
    model, (xs, ys) = rnn_net(), data()
    with pytest.raises(ValueError, match="mismatched time lengths"):
        cg.gradient(BPTT(), model, xs, ys[:-1], Objective("mse"))
    with pytest.raises(TypeError, match="LearningRule"):
        cg.gradient("bptt", model, xs, ys, Objective("mse"))
