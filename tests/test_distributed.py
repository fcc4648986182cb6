"""Data-parallel training with gloo on 2 local processes: one step on 2 ranks with half
batches equals one process on the full batch (float64); a failing rank ends the job."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist

from chronograd._tree import tree_leaves
from tests.dist_worker import make_trainer, problem

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")

RULES = [
    ("bptt", {}),
    ("tbptt", {"chunk_size": 4}),
    ("tbptt", {"chunk_size": 3, "k2": 6}),
    ("ottt", {"chunk_size": 1}),
    ("sltt", {"k": 5}),
    ("fptt", {}),
    ("fptt", {"form": "two_pass", "chunk_size": 3}),  # its second pass is averaged over ranks too
    ("drtrl", {"chunk_size": 4}),
    ("pp-prop", {"decay": 0.5, "chunk_size": 4}),
    ("eprop", {"feedback": "symmetric", "chunk_size": 4}),
    ("eprop", {"feedback": "random"}),
    # each rank draws its own B; the trainer broadcasts rank 0's (the persistent carry)
    ("eprop", {"feedback": "random", "feedback_seed": "<rank>", "chunk_size": 5}),
    ("eprop", {"feedback": "adaptive", "feedback_decay": 0.1, "chunk_size": 3}),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(rules, out, mode="ok", timeout=120):
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), CHRONOGRAD_DIST_TIMEOUT="15", OMP_NUM_THREADS="1")  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.dist_worker", json.dumps(rules), str(out), mode],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # fmt: skip
    results = []
    deadline = time.time() + timeout
    for p in procs:
        try:
            _, err = p.communicate(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("the distributed job hung") from None
        results.append((p.returncode, err))
    return results


def test_two_ranks_with_half_batches_equal_one_process_on_the_full_batch(tmp_path):
    results = _launch(RULES, tmp_path)  # one 2-process job runs every rule in turn
    assert all(code == 0 for code, _ in results), results
    for i, (rule, opts) in enumerate(RULES):
        model, xs, ys = problem()
        trainer = make_trainer(model, rule, opts, distributed=False)
        trainer.fit([(xs, ys)], epochs=1)
        got = torch.load(tmp_path / f"{i}.pt")
        for name, p in model.state_dict().items():
            torch.testing.assert_close(
                got[name], p, rtol=1e-12, atol=1e-14, msg=f"{rule} {opts} {name}"
            )
        # the rule's persistent state (e.g. FPTT's running average) matches too
        carry = torch.load(tmp_path / f"{i}.carry.pt")
        want = trainer.state_dict()["rule"]
        for a, b in zip(tree_leaves(carry), tree_leaves(want), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, msg=f"{rule} {opts} carry")


def _last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


def test_a_rank_that_raises_ends_the_job_with_the_error(tmp_path):
    t0 = time.time()
    (c0, e0), (c1, e1) = _launch([["bptt", {}]], tmp_path, mode="fail", timeout=90)
    assert c1 != 0 and "rank 1 failed on purpose" in e1
    assert c0 != 0, "rank 0 must not finish as if nothing happened"
    # rank 0 names the failed rank and its error, not the backend's "connection reset"
    last = _last_line(e0)
    assert "DistributedFailure" in last, e0[-2000:]
    assert "rank 1 failed: ValueError: rank 1 failed on purpose" in last
    assert time.time() - t0 < 90


def test_a_killed_rank_is_named_by_the_survivor(tmp_path):
    t0 = time.time()
    (c0, e0), (c1, _) = _launch([["bptt", {}]], tmp_path, mode="kill", timeout=90)
    assert c1 == -9 and c0 != 0
    last = _last_line(e0)
    assert "DistributedFailure" in last and "rank 1 stopped answering" in last, e0[-2000:]
    assert ".cc:" not in last  # the backend's cause, without its source location
    assert time.time() - t0 < 60  # ends at the broken connection, well within the timeout


def test_the_cli_reports_a_distributed_failure_in_one_line(monkeypatch, tmp_path, capsys):
    from chronograd.cli import main
    from chronograd.training import Trainer
    from chronograd.training.distributed import DistributedFailure

    def fit(*a, **k):
        raise DistributedFailure("distributed training stopped on rank 0 of 2: rank 1 failed")

    monkeypatch.setattr(Trainer, "fit", fit)
    argv = ["train", "--task-opt", "time_scale=0.05", "--hidden", "4", "--epochs", "1",
            "--quiet", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("rank 1 failed") and "\n" not in err and "Traceback" not in err


def test_rules_that_update_weights_directly_are_refused(monkeypatch):
    from chronograd.rules import Update
    from chronograd.sequence import Span
    from chronograd.training import Trainer, apply_to_model
    from chronograd.training.distributed import DistributedContext

    model, _, _ = problem()
    trainer = make_trainer(model, "bptt", {}, distributed=False)
    apply = apply_to_model(
        model, trainer.optimizer, rule=trainer.rule, distributed=DistributedContext(0, 2)
    )
    update = Update(
        {}, {"layers.1.input.bias": torch.zeros(2, dtype=torch.float64)}, Span(0, 1, 1), 2
    )
    with pytest.raises(ValueError, match="updates weights directly"):
        apply(update)
    assert isinstance(trainer, Trainer)


def test_shard_gives_each_rank_whole_groups():
    from chronograd.training.distributed import DistributedContext, shard

    batches = list(range(7))
    assert list(shard(batches, DistributedContext(0, 3))) == [0, 3]
    assert list(shard(batches, DistributedContext(2, 3))) == [2, 5]


def test_cli_train_runs_unchanged_under_torchrun(tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun not installed next to this python")
    cmd = [torchrun, "--nproc-per-node", "2", "--master-port", str(_free_port()), "-m", "chronograd", "train",
           "--task", "evidence", "--task-opt", "time_scale=0.05", "--task-opt", "batch_size=8",
           "--task-opt", "batches_per_epoch=2", "--task-opt", "val_batches=2", "--cell", "lif",
           "--hidden", "8", "--epochs", "1", "--out", str(tmp_path), "--quiet"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", CHRONOGRAD_DIST_TIMEOUT="30")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["epochs"] == 1 and out.stdout.count("val_recall_error") == 1  # rank 0 reports


def test_rls_refuses_distributed_training_with_a_clear_error():
    from chronograd.cells import LeakyReadout, Map, Stack
    from chronograd.objectives import Objective
    from chronograd.rules import RLS
    from chronograd.training import Trainer
    from chronograd.training.distributed import DistributedContext

    model = Stack(Map(torch.nn.Identity(), 3, 3), LeakyReadout(3, 2)).double()
    trainer = Trainer(model, RLS(), Objective("mse"), distributed=False)
    trainer.distributed = DistributedContext(0, 2)  # as if launched on 2 ranks
    x, y = torch.randn(4, 2, 3, dtype=torch.float64), torch.randn(4, 2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="RLS updates weights directly"):
        trainer._sequence(x, y)
