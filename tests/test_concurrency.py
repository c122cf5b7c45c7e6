"""Concurrent runs on one root and kill -9 recoveries, with real processes (tests/concurrent_runs.py).

Two runs of one seed on one root never fail on identical bytes and never remove each other's
outputs; a run and a --force replay, and two seeds, share a root as well; simultaneous
--world-policy overlays agree on one folder; a run killed at any moment leaves no temporary file in
a published folder and its rerun publishes the bytes of an undisturbed run, leaving no temporary
anywhere. The default trial counts keep the suite quick; SEG2B_CONCURRENCY_TRIALS takes the
driver's `mode=count,...` for the full figures (e.g. same-seed=20,force=5,two-seeds=5,overlay=5,kill=14).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import small_policies

DEFAULT_TRIALS = "same-seed=3,force=1,two-seeds=1,overlay=1,kill=5"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("concurrency")
    pdir = small_policies(base)
    trials = os.environ.get("SEG2B_CONCURRENCY_TRIALS", DEFAULT_TRIALS)
    out = subprocess.run([sys.executable, "-m", "tests.concurrent_runs", "--policies", str(pdir), "--trials", trials,
                          "--scratch", str(base / "scratch")],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent, timeout=900)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("mode", ["same-seed", "force", "two-seeds", "overlay", "kill"])
def test_no_failure(report, mode):
    assert report[mode]["trials"] >= 1 and report[mode]["failures"] == 0, report[mode]["failed"]


def test_every_kill_hit_a_running_process(report):
    assert report["kill"]["killed_mid_run"] == report["kill"]["trials"]
