"""The 1M-merchant plan is arithmetic on measured points: check it on points built to a known law."""

from __future__ import annotations

import pytest

from benchmarks import dask_plan


def point(n: int, shard: int = 100, worker_peak: int = 1 << 30) -> dict:
    # Every quantity = fixed part + per-merchant part, so two sizes recover it exactly.
    stages = [{"stage": s, "seconds": 0.5} for s in dask_plan.UNSHARDED]
    stages += [{"stage": "S5", "seconds": 9.0, "executor": {"scratch_bytes": 10 * n, "split_bytes": 20 * n}}]
    dask = {"stages": stages, "summary": {"driver_busy_seconds": 1.0 + 0.01 * n},
            "cpu_seconds": {"workers": 2.0 + 0.1 * n}, "driver_peak_rss_bytes": 1000 + 50 * n,
            "worker_peak_rss_bytes": [worker_peak]}
    return {"n_merchants": n, "shard_merchants": shard, "arrivals": 800 * n, "configs": {"dask": dask}}


def test_two_sizes_recover_a_linear_law():
    r = dask_plan.plan([point(100), point(400)], merchants=10_000, workers=10)
    assert r["arrivals"] == pytest.approx(8_000_000)
    assert r["worker_cpu_seconds"] == pytest.approx(2.0 + 0.1 * 10_000)
    assert r["driver_serial_seconds"] == pytest.approx(1.0 + 0.01 * 10_000 + 0.5 * len(dask_plan.UNSHARDED))
    assert r["scratch_bytes"] == pytest.approx(10 * 10_000)
    assert r["shards"] == 100


def test_wall_time_lies_between_full_overlap_and_none():
    r = dask_plan.plan([point(100), point(400)], merchants=10_000, workers=10)
    worker_wall = r["worker_cpu_seconds"] / 10
    assert r["wall_seconds_low"] == pytest.approx(max(r["driver_serial_seconds"], worker_wall))
    assert r["wall_seconds_high"] == pytest.approx(r["driver_serial_seconds"] + worker_wall)


def test_worker_memory_comes_from_the_largest_world_shard_size():
    r = dask_plan.plan([point(100, shard=50, worker_peak=1), point(400, shard=100, worker_peak=7)], 10_000, 4)
    assert r["worker_peak_bytes"] == 7 and r["shard_merchants"] == 100
