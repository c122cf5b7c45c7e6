"""The replay (engine/replay.py): a seed rerun from nothing in a child process, reduced to the digest
of every output, and compared with the published run's. On the small world, so a replay takes
seconds."""

from __future__ import annotations

import json

import pytest

from engine.pipeline import Pipeline
from engine.replay import (
    CHANGED,
    ONLY_PUBLISHED,
    ONLY_REPLAYED,
    compare,
    finish_replay,
    output_digests,
    output_paths,
    start_replay,
)
from tests.helpers import private_root, small_policies

SEED = 42


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A small world's seed run and its replay, both finished."""
    tmp = tmp_path_factory.mktemp("replay")
    pol = small_policies(tmp)
    result = Pipeline(SEED, tmp / "runs", pol).run()
    replayed = finish_replay(start_replay(SEED, tmp / "scratch", pol))
    return result, replayed


def test_an_unchanged_run_replays_to_identical_digests(published):
    result, replayed = published
    assert replayed.error is None
    mine = output_digests(result.runs_root, result.ctx)
    assert mine == replayed.digests and compare(mine, replayed.digests) == {}
    labels = output_paths(result.ctx)
    # every output of every stage but the optional logs, the S8 bundle among them
    assert {labels[p].split(":")[0] for p in mine} == {s.name for s in result.stages}
    assert json.loads((result.runs_root.parent / "scratch" / "replay_digests.json").read_text()) == replayed.digests


def test_a_byte_flipped_after_the_run_is_named(published, tmp_path):
    result, replayed = published
    root = private_root(result.runs_root, tmp_path)
    target = next(p for p, label in output_paths(result.ctx).items() if label == "S1:s1_site_weights")
    data = bytearray((root / target).read_bytes())
    data[len(data) // 2] ^= 0x01
    (root / target).write_bytes(bytes(data))
    assert compare(output_digests(root, result.ctx), replayed.digests) == {target: CHANGED}


def test_missing_and_extra_outputs_are_named():
    assert compare({"a": "1", "b": "2"}, {"b": "2", "c": "3"}) == {"a": ONLY_PUBLISHED, "c": ONLY_REPLAYED}


def test_a_failing_replay_child_gives_one_error_line(tmp_path):
    pol = small_policies(tmp_path)
    (pol / "route_rng_policy_v1.json").write_text("{ not json")
    replayed = finish_replay(start_replay(SEED, tmp_path / "scratch", pol))
    assert replayed.digests == {}
    assert replayed.error and "\n" not in replayed.error and "Traceback" not in replayed.error
    assert replayed.error.startswith("replay: error: ") and "route_rng_policy_v1" in replayed.error
    # the child's whole stderr is that one line, not a traceback
    assert (tmp_path / "scratch" / "replay_stderr.txt").read_text().strip() == replayed.error
