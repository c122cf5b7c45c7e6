"""A user-supplied upstream folder instead of the built-in world."""

from __future__ import annotations

import shutil

import pytest

from engine.errors import EngineError
from engine.pipeline import Pipeline, dataset_path


@pytest.fixture(scope="module")
def upstream_dir(tmp_path_factory):
    """The built-in world of seed 101, exported in the user-supplied layout."""
    tmp = tmp_path_factory.mktemp("up")
    pipe = Pipeline(101, tmp / "runs")
    pipe.run(until="world")
    out = tmp / "upstream"
    out.mkdir()
    for name in ("merchants", "site_locations", "site_timezones"):
        shutil.copy(dataset_path(name, tmp / "runs", pipe.ctx), out / f"{name}.parquet")
    shutil.copytree(dataset_path("validation_bundle_1B", tmp / "runs", pipe.ctx), out / "validation")
    return out


def test_user_upstream_runs_through_s2(upstream_dir, tmp_path):
    result = Pipeline(101, tmp_path / "runs", upstream=upstream_dir).run(until="S2")
    assert [r.status for r in result.stages] == ["ran"] * 5 and result.load("s1_site_weights").height > 0


def test_user_upstream_identity_follows_its_flag(upstream_dir, tmp_path):
    builtin = Pipeline(101, tmp_path / "a")
    user = Pipeline(101, tmp_path / "b", upstream=upstream_dir)
    assert builtin.ctx.mf != user.ctx.mf


def test_user_upstream_with_tampered_table_stops_at_s0(upstream_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(upstream_dir, bad)
    data = bytearray((bad / "site_locations.parquet").read_bytes())
    data[100] ^= 0xFF
    (bad / "site_locations.parquet").write_bytes(bytes(data))
    with pytest.raises(EngineError, match="1B bundle certifies"):
        Pipeline(101, tmp_path / "runs", upstream=bad).run(until="S0")


def test_user_upstream_without_flag_is_refused(upstream_dir, tmp_path):
    bad = tmp_path / "noflag"
    shutil.copytree(upstream_dir, bad)
    (bad / "validation" / "_passed.flag").unlink()
    with pytest.raises(EngineError, match="_passed.flag"):
        Pipeline(101, tmp_path / "runs", upstream=bad)


def test_same_upstream_from_another_folder_is_the_same_run(upstream_dir, tmp_path):
    """The published world card names the upstream by content, so a copy elsewhere replays identically."""
    root = tmp_path / "runs"
    Pipeline(101, root, upstream=upstream_dir).run(until="S0")
    moved = tmp_path / "elsewhere"
    shutil.copytree(upstream_dir, moved)
    replay = Pipeline(101, root, upstream=moved, force=True).run(until="S0")
    assert replay.replay_identical
