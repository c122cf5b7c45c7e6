"""Shared fixtures: policy folders that differ from the default in one place, a small world for
end-to-end checks that must stay fast, and lane runs that several tests read (each lane run once
per session)."""

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


def _small_world(d: dict) -> None:
    d["n_merchants"] = 24


SMALL_WORLD = {  # 24 merchants, one week, 3 active days: world..S8 in well under a second
    "world_policy_v1": _small_world,
    "day_effect_policy_v1": lambda d: d.update(day_range={"start": "2026-01-05", "end": "2026-01-11"}),
    "roster_policy_v1": lambda d: d.update(min_active_days=3),
}


def small_policies(tmp: Path, edits: dict | None = None) -> Path:
    """The small world's policy folder, with further `edits` = {policy name: fn(data) -> None}."""
    merged = dict(SMALL_WORLD)
    for name, fn in (edits or {}).items():
        first = merged.get(name)
        merged[name] = (lambda d, a=first, b=fn: (a(d) if a else None, b(d))) if first else fn
    return policy_variant(tmp, merged)


def tree_state(root: Path) -> dict[str, str]:
    """Every entry under `root` (recursively): files by SHA-256, links by target, folders by name,
    so any added, removed or changed entry shows."""
    import hashlib
    import os

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "link -> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "folder"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def fast_lane(tmp_path_factory):
    """The fast lane on the default world, scored with replay (seed 42)."""
    from certification.lanes import score_lane

    root = tmp_path_factory.mktemp("fast_lane")
    return score_lane("fast", root / "runs")
