"""Per-layer activity without hooks, and the plots (headless PNGs)."""

import pytest
import torch
from torch import nn

from chronograd.activity import is_binary, layers_of, record
from chronograd.cells import ALIF, LIF, LeakyReadout, LeakyRNN, Map, Stack
from chronograd.sequence import unroll
from chronograd.training import History
from chronograd.viz import alignment_bars, learning_curve, learning_curves, raster, scaling


def _spiking(dtype=torch.float64):
    torch.manual_seed(0)
    inner = Stack(LIF(5, 7, tau_mem=3.0, threshold=0.3), ALIF(7, 6, tau_mem=3.0, threshold=0.3))
    return Stack(inner, Map(nn.Linear(6, 6)), LeakyReadout(6, 3, kappa=0.5)).to(dtype)


def test_record_matches_the_stack_step_by_step_and_names_state_fields():
    model = _spiking()
    xs = (torch.rand(20, 4, 5, dtype=torch.float64) < 0.4).double()
    acts = record(model, xs)
    assert [a.name for a in acts] == ["0:LIF", "1:ALIF", "2:Map", "3:LeakyReadout"]
    ys, final = unroll(model, xs)
    torch.testing.assert_close(acts[-1].output, ys, rtol=0, atol=0)  # float64: exact
    assert set(acts[0].state) == {"v"} and set(acts[1].state) == {"v", "a"}
    assert acts[2].state == {} and set(acts[3].state) == {"y"}
    torch.testing.assert_close(acts[1].state["a"][-1], final[0][1].a)  # nested stack state
    assert acts[0].spiking and acts[1].spiking and not acts[3].spiking
    assert acts[0].output.sum() > 0  # the test exercises spikes, not silence
    # spikes are a function of the recorded membrane potential (LIF: z = H(v - v_th))
    z = (acts[0].state["v"] - model.layers[0].layers[0].threshold >= 0).double()
    torch.testing.assert_close(acts[0].output, z)


def test_record_starts_from_a_given_state():
    model = _spiking()
    xs = torch.rand(6, 2, 5, dtype=torch.float64)
    state = model.init_state(2, dtype=torch.float64)
    state = ((state[0][0]._replace(v=torch.full((2, 7), 0.2, dtype=torch.float64)), state[0][1]),
             *state[1:])  # fmt: skip
    torch.testing.assert_close(record(model, xs, state)[-1].output, unroll(model, xs, state)[0])


def test_layers_of_and_binary_detection():
    rnn = LeakyRNN(3, 4)
    assert layers_of(rnn) == [rnn]
    assert is_binary(torch.tensor([0.0, 1.0])) and not is_binary(torch.tensor([0.5]))
    assert not is_binary(torch.tensor([0, 1]))  # integer labels are not spikes
    with pytest.raises(TypeError, match="chronograd cell"):
        layers_of(nn.Linear(2, 2))


def test_plots_write_non_empty_pngs(tmp_path):
    model = _spiking(torch.float32)
    xs = (torch.rand(30, 2, 5) < 0.3).float()
    acts = record(model, xs)
    paths = [
        raster(acts, tmp_path / "r.png", inputs=xs, targets=torch.randn(30, 2, 3), title="t"),
        raster(acts, tmp_path / "r2.png", targets=torch.zeros(30, 2, dtype=torch.long), sample=1),
        raster(
            record(Stack(LeakyRNN(5, 4), LeakyReadout(4, 2)), torch.randn(30, 1, 5)),
            tmp_path / "rate.png",
            inputs=torch.randn(30, 1, 5),
        ),
    ]
    h = History()
    for e in range(1, 4):
        h.append(e, loss=1.0 / e, val_loss=1.2 / e, val_acc=0.5 + 0.1 * e)
    paths += [
        learning_curve(h, tmp_path / "lc.png", metric="acc"),
        learning_curves(
            {"a": h.records, "b": h.records[:2]}, tmp_path / "lcs.png", metric="acc", chance=0.5
        ),
        alignment_bars(
            {
                "bptt": {
                    "init": {"cosine": 1.0, "rel_error": 0.0},
                    "end": {"cosine": 1.0, "rel_error": 0.0},
                },
                "rls": {
                    "init": {"cosine": 0.3, "rel_error": None},
                    "end": {"cosine": -0.2, "rel_error": 40.0},
                },
                "skipped": {"init": None},
            },
            tmp_path / "al.png",
        ),
        scaling(
            {"ms": {"forward": [(10, 1.0), (100, 9.0)], "bptt": [(10, 2.0), (100, 0.0)]}},
            tmp_path / "sc.png",
            xlabel="T",
        ),
    ]
    for p in paths:
        assert p.stat().st_size > 1000


def test_raster_validates_its_input(tmp_path):
    acts = record(_spiking(torch.float32), torch.rand(5, 2, 5))
    with pytest.raises(ValueError, match="sample"):
        raster(acts, tmp_path / "x.png", sample=2)
    with pytest.raises(ValueError, match="empty"):
        raster([], tmp_path / "x.png")
