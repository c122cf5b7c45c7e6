"""Shared fixtures: policy folders that differ from the default in one place, and lane runs
that several tests read (each lane run once per session)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.policies import DEFAULT_POLICY_DIR


def edited_policy(name: str, **changes):
    """The shipped policy `name` with `changes` applied in memory (keys are '/'-separated paths);
    its digest is zeroed so it can never pass for the shipped one."""
    import copy
    import dataclasses

    from engine.policies import load_policy

    base = load_policy(name)
    data = copy.deepcopy(base.data)
    for path, value in changes.items():
        node, keys = data, path.split("/")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return dataclasses.replace(base, data=data, sha256="0" * 64)


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
