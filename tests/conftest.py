"""Shared fixtures: policy folders that differ from the default in one place, and lane runs
that several tests read (each lane run once per session)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.policies import DEFAULT_POLICY_DIR


def policy_variant(tmp: Path, edits: dict) -> Path:
    """A copy of the default policy folder with `edits` = {policy name: fn(data) -> None} applied."""
    target = tmp / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, target)
    for name, fn in edits.items():
        path = target / f"{name}.json"
        data = json.loads(path.read_text())
        fn(data)
        path.write_text(json.dumps(data, indent=1))
    return target


@pytest.fixture(scope="session")
def fast_lane(tmp_path_factory):
    """The fast lane on the default world, scored with replay (seed 42)."""
    from certification.lanes import score_lane

    root = tmp_path_factory.mktemp("fast_lane")
    return score_lane("fast", root / "runs")
