"""`chronograd bench`: end to end on a tiny sweep, the JSON schema, the guards, work counting."""

import json
import math

import pytest
import torch

from chronograd import rules
from chronograd.bench import count_work
from chronograd.cli import main
from chronograd.comparison import scaling
from chronograd.comparison.scaling import _predict_memory, bench

from .test_compare import NotForThisModel

FLOORS = {"bandwidth_gbs": 10.0, "matmul_gflops": 50.0}
QUIET = dict(repeats=1, batch=2, memory=False, floors=FLOORS, log=lambda _: None)


def _finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def test_bench_end_to_end_reports_points_floors_and_skipped_rules(tmp_path):
    rules.register("not-for-this", NotForThisModel)
    try:
        argv = ["bench", "--cell", "lif", "--rules", "bptt,no-such-rule,not-for-this",
                "--hidden", "8,16", "--steps", "5,10", "--repeats", "1", "--batch", "2",
                "--no-memory", "--quiet", "--out", str(tmp_path)]  # fmt: skip
        assert main(argv) == 0
    finally:
        del rules.RULES["not-for-this"]
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["schema"] == "chronograd.bench/1"
    assert _finite(doc["floors"]["bandwidth_gbs"]) and _finite(doc["floors"]["matmul_gflops"])
    status = {r["name"]: r for r in doc["rules"]}
    assert "not available in this installation" in status["no-such-rule"]["reason"]
    assert "does not apply" in status["not-for-this"]["reason"]
    assert status["bptt"]["status"] == "ok"
    pts = {(p["rule"], p["hidden"], p["steps"]): p for p in doc["points"]}
    # T sweep at N=8 and N sweep at T=5 share (8, 5): 3 points per series
    assert set(pts) == {(r, n, t) for r in ("forward", "bptt")
                        for n, t in ((8, 5), (8, 10), (16, 5))}  # fmt: skip
    assert sorted(pts["bptt", 8, 5]["sweeps"]) == ["N", "T"]
    for (rule, _, _), p in pts.items():
        assert p["status"] == "ok", p["reason"]
        for key in ("ms_per_step", "flops", "bytes", "gflops", "gbs", "matmul_fraction",
                    "bandwidth_fraction"):  # fmt: skip
            assert _finite(p[key]) and p[key] > 0, (rule, key, p[key])
        if rule != "forward":
            assert _finite(p["vs_forward"])
    # every field is documented in the module docstring
    for key in list(doc) + list(doc["config"]) + list(doc["floors"]) + list(pts["bptt", 8, 5]):
        assert key in scaling.__doc__, f"{key!r} is not documented in chronograd.comparison.scaling"
    table = (tmp_path / "bench.md").read_text()
    assert "| bptt | 16 | 5 |" in table and "no-such-rule: skipped" in table
    for png in ("scaling_T.png", "scaling_N.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert "--hidden 8,16" in doc["command"]


def test_time_guard_skips_instead_of_running():
    doc = bench("lif", "bptt", hidden="8", steps="5", max_seconds=1e-9, **QUIET)
    assert {p["status"] for p in doc["points"]} == {"skipped"}
    assert all("max_seconds" in p["reason"] for p in doc["points"])


def test_memory_guard_extrapolates_from_the_measured_points(monkeypatch):
    monkeypatch.setattr(scaling, "peak_memory", lambda target, kw, **_: 1000 * kw["steps"])
    doc = bench(
        "rnn", "bptt", hidden="8", steps="5,10,1000", max_memory_bytes=50_000,
        **{**QUIET, "memory": True},
    )  # fmt: skip
    pts = {(p["rule"], p["steps"]): p for p in doc["points"]}
    assert pts["bptt", 10]["peak_memory_bytes"] == 10_000
    assert pts["bptt", 10]["memory_vs_forward"] == pytest.approx(1.0)
    assert pts["bptt", 1000]["status"] == "skipped"
    assert "predicted peak memory" in pts["bptt", 1000]["reason"]


def test_predict_memory_uses_the_last_slope_and_a_floor():
    done = [{"steps": 10, "peak_memory_bytes": 100}, {"steps": 100, "peak_memory_bytes": 10_000}]
    assert _predict_memory(done, 1000, "T") == pytest.approx(1_000_000)  # slope 2
    flat = [{"steps": 10, "peak_memory_bytes": 100}, {"steps": 100, "peak_memory_bytes": 100}]
    assert _predict_memory(flat, 1000, "T") == pytest.approx(1000)  # at least slope 1 in T
    assert _predict_memory([], 1000, "T") is None


def test_bench_memory_point_in_a_fresh_process():
    doc = bench("lif", "bptt", hidden="8", steps="5", **{**QUIET, "memory": True})
    for p in doc["points"]:
        assert p["memory_error"] is None and _finite(p["peak_memory_bytes"])


def test_count_work_counts_matmul_flops_and_operand_bytes():
    a = torch.randn(32, 32)
    w = count_work(lambda: a @ a)
    assert w.flops == 2 * 32**3
    assert w.bytes == 3 * 32 * 32 * 4  # two operands and the result
    assert count_work(lambda: a.t()).bytes == 0  # a view moves nothing


def test_bench_rejects_bad_sizes():
    with pytest.raises(ValueError, match="hidden"):
        bench("lif", "bptt", hidden="8,x", steps="5", **QUIET)
    with pytest.raises(ValueError, match="steps"):
        bench("lif", "bptt", hidden="8", steps="0", **QUIET)


def test_time_prediction_separates_the_per_call_overhead(monkeypatch):
    # a call over k steps "takes" 10 ms + 1 ms per step
    monkeypatch.setattr(scaling, "_seconds", lambda fn, device: 0.010 + 0.001 * fn())
    call = lambda k: lambda: k  # noqa: E731
    cpu = torch.device("cpu")
    assert scaling._predict_seconds(call, 10_000, cpu) == pytest.approx(0.010 + 10.0)
    assert scaling._predict_seconds(call, 3, cpu) == pytest.approx(0.013)
    # a probe over 64 steps would exceed the probe budget: scale the short probe (overestimate)
    monkeypatch.setattr(scaling, "_seconds", lambda fn, device: 1.0 * fn())
    assert scaling._predict_seconds(call, 1000, cpu) == pytest.approx(1000.0)
