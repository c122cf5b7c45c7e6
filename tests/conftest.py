"""Shared fixtures only: lane runs that several tests read (each lane run once per session). The
helpers fixtures and tests build from (contexts, policy variants, synthetic worlds) live in
tests/helpers.py."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fast_lane(tmp_path_factory):
    """The fast lane on the default world, scored with replay (seed 42). Read it; a test that
    changes files of its runs root works on a copy (tests.helpers.private_root)."""
    from certification.lanes import score_lane

    root = tmp_path_factory.mktemp("fast_lane")
    return score_lane("fast", root / "runs")
