"""Table of bad inputs across the public API: each raises the documented error with a message
that says what was expected. Extend the table when a module adds an entry point."""

import pytest
import torch
from torch import nn

import chronograd as cg
from chronograd import BPTT, TBPTT, Objective, online
from chronograd import dale as dale_mod
from chronograd import regularizers as regs
from chronograd.cells import (
    ALIF,
    GRU,
    LIF,
    DiagonalRNN,
    LeakyReadout,
    LeakyRNN,
    Map,
    SequenceDropout,
    Stack,
    SynapticLIF,
    Triangle,
    WilsonCowan,
)
from chronograd.reproducibility import seed_everything
from chronograd.rules import DRTRL, FPTT, OTTT, RLS, RTRL, SLTT, EProp, PPProp
from chronograd.sequence import spans
from chronograd.training import Checkpoint, EarlyStopping, Event, Trainer
from chronograd.transforms import clip_by_global_norm, ema

D = torch.float64


def net():
    torch.manual_seed(0)
    return Stack(LeakyRNN(3, 4), LeakyReadout(4, 2)).double()


def xs(T=5, B=2, I=3, dtype=D):
    return torch.randn(T, B, I, dtype=dtype)


def ys(T=5, B=2, O=2):
    return torch.randn(T, B, O, dtype=D)


def trainer():
    return Trainer(net(), BPTT(), Objective("mse"))


def batches():
    return [(xs(), ys())]


CASES = [
    # cells
    ("rnn input_size 0", lambda: LeakyRNN(0, 4), ValueError, "input_size must be a positive int"),
    ("rnn alpha 1.5", lambda: LeakyRNN(3, 4, alpha=1.5), ValueError, "alpha must lie in [0, 1)"),
    (
        "rnn activation",
        lambda: LeakyRNN(3, 4, activation="swish"),
        ValueError,
        "unknown activation",
    ),
    ("gru hidden -1", lambda: GRU(3, -1), ValueError, "hidden_size must be a positive int"),
    ("lif tau -1", lambda: LIF(3, 4, tau_mem=-1.0), ValueError, "time constants must be > 0"),
    ("lif threshold 0", lambda: LIF(3, 4, threshold=0.0), ValueError, "threshold must be > 0"),
    ("lif surrogate", lambda: LIF(3, 4, surrogate="relu"), ValueError, "unknown surrogate"),
    ("alif beta < 0", lambda: ALIF(3, 4, beta=-0.1), ValueError, "beta must be >= 0"),
    (
        "alif beta shape",
        lambda: ALIF(3, 4, beta=torch.zeros(5)),
        ValueError,
        "beta must be a float or a (4,) tensor",
    ),
    ("triangle gamma 0", lambda: Triangle(gamma=0.0), ValueError, "must be > 0"),
    (
        "readout kappa 1",
        lambda: LeakyReadout(3, 2, kappa=1.0),
        ValueError,
        "kappa must lie in [0, 1)",
    ),
    ("empty stack", lambda: Stack(), ValueError, "at least one layer"),
    ("stack of nn.Linear", lambda: Stack(nn.Linear(3, 4)), TypeError, "must be a chronograd cell"),
    (
        "stack sizes",
        lambda: Stack(LIF(3, 4), LIF(5, 2)),
        ValueError,
        "layer 0 outputs 4 features but layer 1 expects 5",
    ),
    ("map of a string", lambda: Map("linear"), TypeError, "Map wraps an nn.Module"),
    # sequences
    (
        "unroll a list",
        lambda: cg.unroll(net(), [1, 2]),
        TypeError,
        "must be a tensor of shape (T, B, features)",
    ),
    (
        "unroll 2-d",
        lambda: cg.unroll(net(), torch.zeros(5, 3, dtype=D)),
        ValueError,
        "(T, B, features) (time first)",
    ),
    ("unroll features", lambda: cg.unroll(net(), xs(I=4)), ValueError, "must have shape (T, B, 3)"),
    ("unroll empty", lambda: cg.unroll(net(), xs(T=0)), ValueError, "is empty"),
    ("unroll nn.Linear", lambda: cg.unroll(nn.Linear(3, 2), xs()), TypeError, "init_state"),
    (
        "unroll checkpoint 0",
        lambda: cg.unroll(net(), xs(), checkpoint=0),
        ValueError,
        "checkpoint must be >= 1",
    ),
    ("spans T 0", lambda: list(spans(0, 3)), ValueError, "at least one time step"),
    ("spans size 0", lambda: list(spans(5, 0)), ValueError, "chunk size must be >= 1"),
    # objectives
    (
        "reduction",
        lambda: Objective(reduction="median"),
        ValueError,
        "reduction must be 'mean' or 'sum'",
    ),
    ("last -2", lambda: Objective(last=-2), ValueError, "last must be a positive int"),
    ("criterion name", lambda: Objective("hinge"), ValueError, "unknown criterion"),
    (
        "regularizer not callable",
        lambda: Objective(regularizers=[3]),
        TypeError,
        "regularizers must be callables",
    ),
    (
        "output_weights keys",
        lambda: Objective({"a": "mse"}, output_weights={"b": 1.0}),
        ValueError,
        "not criterion outputs",
    ),
    ("empty criterion dict", lambda: Objective({}), ValueError, "criterion dict is empty"),
    (
        "mse shapes",
        lambda: Objective("mse").loss(ys(O=2), ys(O=3)),
        ValueError,
        "must have the same shape",
    ),
    (
        "mask length",
        lambda: Objective("mse", mask=torch.ones(4)).loss(ys(), ys()),
        ValueError,
        "mask must have shape (5,)",
    ),
    (
        "dict outputs, one criterion",
        lambda: Objective("mse").loss({"a": ys()}, {"a": ys()}),
        TypeError,
        "dict of criteria",
    ),
    (
        "unreduced criterion",
        lambda: Objective(torch.nn.functional.mse_loss).loss(ys(), ys()),
        ValueError,
        "reduction='none'",
    ),
    (
        "ce labels shape",
        lambda: Objective("cross_entropy").loss(ys(), torch.zeros(2, dtype=torch.long)),
        ValueError,
        "y.expand(T, B)",
    ),
    # rules
    ("tbptt k1 > k2", lambda: TBPTT(5, 3), ValueError, "k1 <= k2"),
    ("tbptt k1 0", lambda: TBPTT(0), ValueError, "k1 must be a positive int"),
    (
        "tbptt auto_ratio",
        lambda: TBPTT(auto_ratio=0.0),
        ValueError,
        "auto_ratio must lie in (0, 1]",
    ),
    ("clip < 0", lambda: clip_by_global_norm(-1.0), ValueError, "max_norm must be > 0"),
    ("ema 1.5", lambda: ema(1.5), ValueError, "beta must lie in [0, 1)"),
    ("params as a string", lambda: BPTT(params="w"), TypeError, "tuple of parameter names"),
    (
        "time_dim -1",
        lambda: Trainer(net(), BPTT(), Objective("mse"), time_dim=-1),
        ValueError,
        "time_dim must be a non-negative int",
    ),
    ("nonfinite policy", lambda: BPTT(nonfinite="ignore"), ValueError, "nonfinite must be"),
    ("unknown rule option", lambda: BPTT(chunk=4), TypeError, "chunk"),
    (
        "prepare_batch not callable",
        lambda: Trainer(net(), BPTT(), Objective("mse"), prepare_batch=3),
        TypeError,
        "prepare_batch must be callable",
    ),
    (
        "params pattern",
        lambda: cg.gradient(BPTT(params=("zzz",)), net(), xs(), ys(), Objective()),
        ValueError,
        "matches no trainable parameter",
    ),
    (
        "time lengths",
        lambda: cg.gradient(BPTT(), net(), xs(), ys(T=4), Objective()),
        ValueError,
        "mismatched time lengths",
    ),
    (
        "input dtype",
        lambda: cg.gradient(BPTT(), net(), xs(dtype=torch.float32), ys(), Objective()),
        ValueError,
        "inputs are torch.float32",
    ),
    (
        "input NaN",
        lambda: cg.gradient(BPTT(), net(), xs() * float("nan"), ys(), Objective()),
        ValueError,
        "NaN or inf",
    ),
    (
        "rule as a string",
        lambda: cg.gradient("bptt", net(), xs(), ys(), Objective()),
        TypeError,
        "LearningRule",
    ),
    (
        "objective as a string",
        lambda: cg.gradient(BPTT(), net(), xs(), ys(), "mse"),
        TypeError,
        "Objective",
    ),
    ("unknown rule name", lambda: cg.rules.get("magic"), ValueError, "unknown rule 'magic'"),
    # e-prop
    ("eprop feedback", lambda: EProp(feedback="mirror"), ValueError, "feedback must be one of"),
    (
        "eprop generator",
        lambda: EProp(feedback_init="he"),
        ValueError,
        "unknown feedback generator 'he'",
    ),
    ("eprop trace clip", lambda: EProp(trace_norm_clip=0.0), ValueError, "must be > 0"),
    ("eprop B clip", lambda: EProp(feedback_norm_clip=-1.0), ValueError, "must be > 0"),
    ("eprop decay", lambda: EProp(feedback_decay=1.0), ValueError, "must lie in [0, 1)"),
    ("eprop seed", lambda: EProp(feedback_seed=1.5), TypeError, "feedback_seed must be an int"),
    ("eprop chunk", lambda: EProp(chunk_size=0), ValueError, "chunk_size must be a positive"),
    ("eprop method", lambda: EProp(method="autodiff"), ValueError, "method must be"),
    (
        "eprop reverse online",
        lambda: EProp(method="reverse", chunk_size=4),
        ValueError,
        "needs chunk_size=None",
    ),
    ("eprop rate", lambda: EProp(rate_target=-0.1), ValueError, "rate_target must be >= 0"),
    ("eprop rate reg", lambda: EProp(rate_reg=-1.0), ValueError, "rate_reg must be >= 0"),
    ("eprop trace dtype", lambda: EProp(trace_dtype="int8"), ValueError, "trace_dtype must be"),
    (
        "eprop on a rate network",
        lambda: cg.gradient(EProp(), net(), xs(), ys(), Objective()),
        TypeError,
        "Stack(LIF or ALIF, LeakyReadout)",
    ),
    ("drtrl readout", lambda: DRTRL(readout="exact"), ValueError, "readout must be"),
    (
        "drtrl filter without a leaky readout",
        lambda: cg.gradient(
            DRTRL(readout="filter"), Stack(LeakyRNN(3, 2)).double(), xs(), ys(), Objective()
        ),
        TypeError,
        "without a LeakyReadout as its last layer",
    ),
    # trainer
    (
        "trainer model",
        lambda: Trainer(nn.Linear(3, 2), BPTT(), Objective()),
        TypeError,
        "must be a chronograd cell",
    ),
    (
        "trainer lr",
        lambda: Trainer(net(), BPTT(), Objective(), lr=0.0),
        ValueError,
        "lr must be > 0",
    ),
    (
        "trainer optimizer",
        lambda: Trainer(net(), BPTT(), Objective(), optimizer=3),
        TypeError,
        "optimizer must be",
    ),
    (
        "epochs 0",
        lambda: trainer().fit(batches(), epochs=0),
        ValueError,
        "epochs must be a positive int",
    ),
    (
        "one-shot data",
        lambda: trainer().fit(iter(batches()), epochs=1),
        ValueError,
        "one-shot iterator",
    ),
    ("no batches", lambda: trainer().fit([], epochs=1), ValueError, "no batches"),
    (
        "not a pair",
        lambda: trainer().fit([(xs(),)], epochs=1),
        ValueError,
        "a pair (inputs, targets)",
    ),
    (
        "handler signature",
        lambda: trainer().add_handler(Event.EPOCH_COMPLETED, lambda: None),
        TypeError,
        "cannot be called as (trainer, *args)",
    ),
    (
        "every 0",
        lambda: Event.EPOCH_COMPLETED(every=0),
        ValueError,
        "every= must be a positive int",
    ),
    (
        "every and once",
        lambda: Event.EPOCH_COMPLETED(every=2, once=1),
        ValueError,
        "either every= or once=",
    ),
    (
        "missing checkpoint",
        lambda: trainer().resume("/nonexistent/ck.pt"),
        FileNotFoundError,
        "no checkpoint at",
    ),
    (
        "early stopping mode",
        lambda: EarlyStopping(mode="up"),
        ValueError,
        "mode must be 'min' or 'max'",
    ),
    ("checkpoint keep 0", lambda: Checkpoint("/tmp/x", keep=0), ValueError, "keep must be >= 1"),
    # tasks
    ("unknown task", lambda: cg.tasks.get("nope"), ValueError, "unknown task 'nope'"),
    (
        "evidence time_scale",
        lambda: cg.tasks.get("evidence", time_scale=0.0),
        ValueError,
        "time_scale must lie in (0, 1]",
    ),
    (
        "evidence p_group",
        lambda: cg.tasks.get("evidence", p_group=0.7),
        ValueError,
        "p_group must lie in (0, 0.5)",
    ),
    ("evidence option", lambda: cg.tasks.get("evidence", foo=1), TypeError, "foo"),
    # misc
    ("seed type", lambda: seed_everything("7"), TypeError, "seed must be an int"),
    # cells added by the trace, online and RLS issues
    (
        "synaptic tau",
        lambda: SynapticLIF(3, 4, tau_syn=0.0),
        ValueError,
        "time constants must be > 0",
    ),
    ("diagonal size", lambda: DiagonalRNN(3, 0), ValueError, "hidden_size must be a positive int"),
    (
        "wilson-cowan size",
        lambda: WilsonCowan(0, 3),
        ValueError,
        "input_size must be a positive int",
    ),
    ("dropout size", lambda: SequenceDropout(1.5), ValueError, "size must be a positive int"),
    # trace rules
    (
        "drtrl mode",
        lambda: DRTRL(mode="two-step"),
        ValueError,
        "mode must be one of",
    ),
    ("drtrl chunk", lambda: DRTRL(chunk_size=0), ValueError, "chunk_size must be a positive int"),
    ("pp-prop decay", lambda: PPProp(decay=1.0), ValueError, "decay must lie in [0, 1)"),
    ("pp-prop rank", lambda: PPProp(rank=0), ValueError, "rank must be an int >= 1"),
    (
        "rtrl trace dtype",
        lambda: RTRL(trace_dtype="float"),
        ValueError,
        "trace_dtype must be a floating torch.dtype",
    ),
    (
        "drtrl weight behind a relation",
        lambda: cg.gradient(
            DRTRL(),
            Stack(Map(nn.Linear(3, 4)), LIF(4, 5), LeakyReadout(5, 2)).double(),
            xs(),
            ys(),
            Objective(),
        ),
        TypeError,
        "reaches the hidden state only through another relation",
    ),
    # online rules and helpers
    (
        "ottt decay",
        lambda: OTTT(decay=-0.1),
        ValueError,
        "a trace decay must be a number in [0, 1]",
    ),
    ("sltt k 0", lambda: SLTT(k=0), ValueError, "k must be a positive int"),
    (
        "sltt k online",
        lambda: SLTT(k=3, chunk_size=1),
        ValueError,
        "chunk_size=1 would apply zero updates",
    ),
    ("fptt alpha", lambda: FPTT(alpha=0.0), ValueError, "alpha must be a finite number > 0"),
    ("fptt form", lambda: FPTT(form="triple"), ValueError, "form must be 'dual' or 'two_pass'"),
    (
        "fptt accumulate",
        lambda: Trainer(net(), FPTT(), Objective("mse"), accumulate=True),
        ValueError,
        "accumulate=True",
    ),
    (
        "fptt helper lengths",
        lambda: online.fptt_online_training(
            net(),
            torch.optim.SGD(net().parameters(), lr=0.1),
            xs(T=5),
            ys(T=4),
            torch.nn.functional.mse_loss,
            0.1,
            [],
        ),
        ValueError,
        "differ in time length",
    ),
    # RLS
    ("rls delta", lambda: RLS(delta=0.0), ValueError, "delta must be > 0"),
    ("rls forgetting", lambda: RLS(forgetting=1.5), ValueError, "forgetting must lie in (0, 1]"),
    ("rls strategy", lambda: RLS(strategy="magic"), ValueError, "unknown RLS strategy 'magic'"),
    (
        "rls accumulate",
        lambda: Trainer(net(), RLS(), Objective("mse"), accumulate=True),
        ValueError,
        "accumulate=True does not apply",
    ),
    # tasks
    (
        "digits encoding",
        lambda: cg.tasks.get("digits", encoding="waves"),
        ValueError,
        "encoding must be one of",
    ),
    (
        "copy length",
        lambda: cg.tasks.get("copy", length=0),
        ValueError,
        "length must be a positive int",
    ),
    (
        "arrays with NaN",
        lambda: cg.tasks.from_arrays(
            torch.full((4, 3, 2), float("nan")).numpy(), torch.zeros(4).long().numpy()
        ),
        ValueError,
        "NaN or inf",
    ),
    # regularizers and Dale's law
    (
        "regularizer of a module",
        lambda: regs.L1(nn.Linear(2, 2)),
        TypeError,
        "pass the parameters, not the module",
    ),
    (
        "Lp p < 1",
        lambda: regs.Lp([nn.Parameter(torch.ones(2))], p=0.5),
        ValueError,
        "p must be >= 1",
    ),
    (
        "dale inh_ratio",
        lambda: dale_mod.dale_reference((3, 4), inh_ratio=1.5, pre_dim=0),
        ValueError,
        "inh_ratio must lie in [0, 1]",
    ),
]


@pytest.mark.parametrize("name, call, error, phrase", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(name, call, error, phrase):
    with pytest.raises(error) as info:
        call()
    assert phrase in str(info.value), f"{name}: {info.value}"


def test_the_table_is_large():
    assert len(CASES) >= 40


def test_garbage_checkpoint_is_not_readable(tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"not a readable checkpoint|refusing to load"):
        trainer().resume(bad)


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["train", "--rule", "nope", "--epochs", "1", "--quiet"], "unknown rule 'nope'"),
        (["train", "--task", "nope", "--epochs", "1", "--quiet"], "unknown task 'nope'"),
        (["train", "--rule-opt", "k1", "--epochs", "1", "--quiet"], "must look like key=value"),
        (
            ["train", "--task-opt", "time_scale=5", "--epochs", "1", "--quiet"],
            "time_scale must lie in",
        ),
    ],
)
def test_cli_errors_print_one_line_and_exit_2(argv, phrase, capsys):
    from chronograd.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert phrase in err and "\n" not in err and "Traceback" not in err
