"""Fixtures of the benchmark suite (`python -m pytest benchmarks --benchmark-only
--benchmark-json evidence/benchmarks.json`).

* `base_run`: one full run (world .. S8) of seed 42 on the default world, prepared once per
  session and untimed; the per-stage benchmarks force one stage at a time on top of it.
* `lane_snapshots`: a session dict where the fast-lane benchmark leaves its seed-42 runs root, so
  the witness and certify benchmarks can start from a copy of it (seed 42 reused via receipts).

Rounds: stages and progressive reruns use SEG2B_BENCH_ROUNDS (default 3) rounds of one
iteration; lanes use SEG2B_BENCH_LANE_ROUNDS (default 1) because one certify lane is a minute.
The machine's load average is written into the JSON at the start and the end of the session
(machine_info.loadavg_start / loadavg_end), since shared machines make numbers noisy.
"""

from __future__ import annotations

import os

import pytest

STAGE_ROUNDS = int(os.environ.get("SEG2B_BENCH_ROUNDS", "3"))
LANE_ROUNDS = int(os.environ.get("SEG2B_BENCH_LANE_ROUNDS", "1"))
KERNEL_ROUNDS = int(os.environ.get("SEG2B_BENCH_KERNEL_ROUNDS", "7"))
BENCH_SEED = 42


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


LOADAVG_AT_IMPORT = _loadavg()  # this conftest is imported when the session starts
CODE_AT_START = __import__("benchmarks.workloads", fromlist=["code_state"]).code_state()
FAILED: dict[str, str] = {}  # benchmark test name -> first error line (failed tests leave no stats)


def pytest_runtest_logreport(report):
    if report.failed:
        lines = report.longreprtext.splitlines()
        err = next((ln[1:].strip() for ln in lines if ln.startswith("E ")), lines[-1] if lines else "failed")
        FAILED[report.nodeid.split("::")[-1]] = f"{report.when}: {err}"[:500]


def pytest_benchmark_update_machine_info(config, machine_info):
    import numpy
    import polars

    machine_info["loadavg_start"] = LOADAVG_AT_IMPORT
    machine_info["cpu_count"] = os.cpu_count()
    machine_info["numpy_version"] = numpy.__version__
    machine_info["polars_version"] = polars.__version__
    machine_info["polars_threads"] = polars.thread_pool_size()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["machine_info"]["loadavg_end"] = _loadavg()
    output_json["seg2b"] = {
        "stage_rounds": STAGE_ROUNDS,
        "lane_rounds": LANE_ROUNDS,
        "kernel_rounds": KERNEL_ROUNDS,
        "seed": BENCH_SEED,
        "statistic": "min",
        "failed": dict(FAILED),
        "code": CODE_AT_START,
    }
    from benchmarks.workloads import code_state

    if code_state()["code_sha256"] != CODE_AT_START["code_sha256"]:
        output_json["seg2b"]["code_changed_during_session"] = True


@pytest.fixture(scope="session")
def base_run(tmp_path_factory):
    """(runs_root, RunResult) of one untimed full run of seed 42 on the default world."""
    from engine.pipeline import Pipeline

    root = tmp_path_factory.mktemp("bench_base") / "runs"
    result = Pipeline(BENCH_SEED, root).run()
    return root, result


@pytest.fixture(scope="session")
def lane_snapshots():
    return {}
