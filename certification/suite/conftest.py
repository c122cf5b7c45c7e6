"""The gate suite's plugin: one test per (seed, gate) over a certification record.

`--seg2b-record PATH` scores an existing record (`--seg2b-record-fd N`: one read from a pipe, how a
lane hands over its record); without either the suite runs (or reuses, through the pipeline's
receipts) the lane named by `--seg2b-lane` under `--seg2b-runs-root`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("seg2b")
    group.addoption("--seg2b-record", default=None, help="certification_record.json to check")
    group.addoption("--seg2b-record-fd", type=int, default=None,
                    help="a file descriptor to read the record from (a lane hands over its record through a pipe)")
    group.addoption("--seg2b-lane", default="fast", choices=("fast", "witness", "certify"))
    group.addoption("--seg2b-runs-root", default="runs")


def _record(config) -> dict:
    if not hasattr(config, "_seg2b_record"):
        path = config.getoption("--seg2b-record")
        fd = config.getoption("--seg2b-record-fd")
        if fd is not None:
            with open(fd, "rb") as pipe:
                config._seg2b_record = json.loads(pipe.read())
        elif path:
            config._seg2b_record = json.loads(Path(path).read_text())
        else:
            from certification.lanes import score_lane

            lane, runs_root = config.getoption("--seg2b-lane"), Path(config.getoption("--seg2b-runs-root"))
            config._seg2b_record = score_lane(lane, runs_root).record
    return config._seg2b_record


def pytest_generate_tests(metafunc):
    record = _record(metafunc.config)
    if "seed_gate" in metafunc.fixturenames:
        params = [(s, g) for s in record["per_seed"] for g in record["per_seed"][s]["gates"]]
        metafunc.parametrize("seed_gate", params, ids=[f"seed={s}-{g}" for s, g in params])
    if "seed_check" in metafunc.fixturenames:
        params = [(s, c) for s in record["per_seed"] for c in record["per_seed"][s]["structural"]]
        metafunc.parametrize("seed_check", params, ids=[f"seed={s}-{c}" for s, c in params])
    if "precondition" in metafunc.fixturenames:
        metafunc.parametrize("precondition", sorted(record["preconditions"]))


@pytest.fixture
def record(request):
    return _record(request.config)
