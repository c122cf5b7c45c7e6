"""The installable package: every Python package of the sources is listed for the wheel, and the
policies and the lock ship as package data (`.ci/wheel_check` installs the wheel and runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def test_every_source_package_is_listed():
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("engine", "certification")
             for p in (ROOT / top).rglob("__init__.py")}
    listed = set(SETUPTOOLS["packages"])
    assert found <= listed, sorted(found - listed)
    assert {"seg2b_policies", "seg2b_evidence"} <= listed


def test_policies_schemas_and_lock_are_package_data():
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    folders = SETUPTOOLS["package-dir"]
    policies = ROOT / folders["seg2b_policies"]
    shipped = {p for pattern in data["seg2b_policies"] for p in policies.glob(pattern)}
    assert set(policies.glob("*.json")) | set((policies / "schemas").glob("*.json")) <= shipped
    evidence = ROOT / folders["seg2b_evidence"]
    assert (evidence / "lock.json") in {evidence / p for p in data["seg2b_evidence"]}


def test_default_folders_resolve_to_the_shipped_data():
    from certification.lanes import DEFAULT_LOCK
    from engine.policies import DEFAULT_POLICY_DIR

    assert (DEFAULT_POLICY_DIR / "world_policy_v1.json").is_file() and DEFAULT_LOCK.is_file()
