"""The pipeline: receipts skip unchanged stages, replays are byte-identical, bad inputs stop
the run before anything partial is published."""

from __future__ import annotations

import json

import pytest

from engine.errors import EngineError
from engine.pipeline import Pipeline, dataset_path, receipt_path
from tests.helpers import policy_variant, private_root


@pytest.fixture(scope="module")
def until_s2(tmp_path_factory):
    root = tmp_path_factory.mktemp("p") / "runs"
    first = Pipeline(42, root).run(until="S2")
    return root, first


def test_first_run_runs_every_stage(until_s2):
    _, first = until_s2
    assert [r.status for r in first.stages] == ["ran"] * len(first.stages)


def test_rerun_skips_every_stage(until_s2, tmp_path):
    root = private_root(until_s2[0], tmp_path)  # even a rerun that skips every stage rewrites the run report
    again = Pipeline(42, root).run(until="S2")
    assert [r.status for r in again.stages] == ["skipped"] * len(again.stages)


def test_forced_replay_is_byte_identical(until_s2, tmp_path):
    root = private_root(until_s2[0], tmp_path)  # a forced run republishes: not in the shared root
    replay = Pipeline(42, root, force=True).run(until="S2")
    assert replay.replay_identical


def test_unknown_until_is_named(until_s2):
    root, _ = until_s2
    with pytest.raises(EngineError, match="unknown state"):
        Pipeline(42, root).run(until="S9")


def test_stage_code_change_reruns_it(until_s2, tmp_path, monkeypatch):
    # S2's receipt is rewritten under the patched code version: in a copy, or a later rerun of the
    # shared root would find S2 stale and rerun it
    root = private_root(until_s2[0], tmp_path)
    import engine.pipeline as P

    real = P.code_digest
    monkeypatch.setattr(P, "code_digest", lambda st: ("0" * 64) if st.name == "S2" else real(st))
    rerun = Pipeline(42, root).run(until="S2")
    assert {r.name: r.status for r in rerun.stages}["S2"] == "ran"


def test_tampered_1b_bundle_stops_s0(tmp_path):
    root = tmp_path / "runs"
    pipe = Pipeline(7, root)
    pipe.run(until="roster")
    bundle = dataset_path("validation_bundle_1B", root, pipe.ctx)
    member = bundle / "upstream_manifest.json"
    member.write_bytes(member.read_bytes().replace(b"1B", b"1C", 1))
    with pytest.raises(EngineError, match="upstream_manifest.json"):
        Pipeline(7, root).run(until="S0")
    assert not dataset_path("s0_gate_receipt", root, pipe.ctx).exists()


def test_tampered_upstream_table_stops_s0(tmp_path):
    root = tmp_path / "runs"
    pipe = Pipeline(7, root)
    pipe.run(until="roster")
    table = dataset_path("site_timezones", root, pipe.ctx)
    data = bytearray(table.read_bytes())
    data[-20] ^= 0x01
    table.write_bytes(bytes(data))
    with pytest.raises(EngineError, match="(?i)digest|differ"):
        Pipeline(7, root).run(until="S0")
    assert not dataset_path("sealed_inputs", root, pipe.ctx).exists()


def test_policy_edited_after_sealing_stops_next_state(tmp_path):
    pdir = policy_variant(tmp_path, {})
    root = tmp_path / "runs"
    pipe = Pipeline(42, root, pdir)
    pipe.run(until="S0")
    path = pdir / "alias_layout_policy_v1.json"
    path.write_bytes(path.read_bytes() + b"\n")
    with pytest.raises(EngineError, match="changed after sealing"):
        pipe.run(until="S1")
    assert not dataset_path("s1_site_weights", root, pipe.ctx).exists()


def test_receipts_hold_no_wall_clock(until_s2):
    root, first = until_s2
    receipt = json.loads(receipt_path(root, first.ctx, "S1").read_text())
    assert set(receipt) == {"stage", "inputs", "outputs", "paths", "rows"}
