"""Engine kernels (inputs fixed in benchmarks/workloads.py): absolute figures for the README."""

from __future__ import annotations

from benchmarks import workloads as W
from benchmarks.conftest import KERNEL_ROUNDS


def _bench(benchmark, factory, rounds, **info):
    fn = factory()
    fn()  # warm-up outside the timing (lazy imports, page faults of the inputs)
    benchmark.extra_info.update(info)
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)


def test_philox_2m(benchmark):
    benchmark.group = "kernels"
    _bench(benchmark, W.make_philox_2m, KERNEL_ROUNDS, kind="kernel", what=W.KERNELS["test_philox_2m"][1],
           counters=W.PHILOX_COUNTERS)


def test_alias_build_many_110k(benchmark):
    benchmark.group = "kernels"
    _bench(benchmark, W.make_alias_build_many, KERNEL_ROUNDS, kind="kernel",
           what=W.KERNELS["test_alias_build_many_110k"][1], segments=W.ALIAS_SEGMENTS)


def test_alias_sample_many_1m(benchmark):
    benchmark.group = "kernels"
    _bench(benchmark, W.make_alias_sample_many, KERNEL_ROUNDS, kind="kernel",
           what=W.KERNELS["test_alias_sample_many_1m"][1], draws=W.ALIAS_DRAWS)
