import torch

from chronograd.bench import bandwidth_gbs, matmul_gflops, median_ms, peak_memory


def allocate(mbytes: int):
    """Setup for the peak-memory test: a call that holds ``mbytes`` MiB at its peak."""

    def run():
        x = torch.ones(mbytes * 2**18)  # float32: 4 bytes each
        return float(x.sum())

    return run


def test_floors_and_timing_are_positive_and_finite():
    assert bandwidth_gbs(mbytes=16) > 0.1
    assert matmul_gflops(n=128) > 0.01
    assert median_ms(lambda: sum(range(1000)), repeats=3) > 0


def test_peak_memory_sees_allocations_in_a_fresh_process():
    small = peak_memory("tests.test_bench:allocate", {"mbytes": 8})
    big = peak_memory("tests.test_bench:allocate", {"mbytes": 200})
    assert big > 150 * 2**20
    assert big - small > 150 * 2**20


def test_peak_memory_is_not_hidden_by_a_large_parent_process():
    held = torch.ones(300 * 2**18)  # the parent holds 300 MiB (a child inherits its peak RSS)
    held += 1
    got = peak_memory("tests.test_bench:allocate", {"mbytes": 100})
    assert 80 * 2**20 < got < 250 * 2**20
    del held
