"""The runtime gate (benchmarks/check_budgets.py) against benchmarks/budgets.json.

(a) Synthetic benchmark JSONs: the reference session itself passes, so does a uniformly slower
    machine, and an injected 2x slowdown of one state (S4) fails, naming it; a plan ceiling
    fails even when the ratios hold.
Real timings never run in the default test suite (its result must not depend on the machine's
speed or load): the live kernel gate is `benchmarks/test_live_kernel_gate.py`.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import check_budgets as CB

BUDGETS = CB.load_json(CB.DEFAULT_BUDGETS)


def reference_session(budgets=BUDGETS, slowdown: float = 1.0) -> tuple[dict, dict]:
    """(seconds, extra_info) of the calibration session recorded in budgets.json, every time x slowdown."""
    cal = budgets["calibrated"]["calibration_seconds"]
    seconds = {budgets["calibration"]["numpy"]: cal["numpy"] * slowdown,
               budgets["calibration"]["polars"]: cal["polars"] * slowdown}
    extra = {}
    for name, b in budgets["benchmarks"].items():
        seconds[name] = b["measured_ratio"] * cal[b["calibration"]] * slowdown
        extra[name] = {"kind": "kernel"} if b["calibration"] == "numpy" else {}
    return seconds, extra


def test_budgets_cover_every_state_and_lane():
    names = set(BUDGETS["benchmarks"])
    assert {f"test_stage[{s}]" for s in ("world", "roster", "S0", "S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8")} <= names
    assert {"test_philox_2m", "test_alias_build_many_110k", "test_alias_sample_many_1m"} <= names
    assert {"test_lane_fast", "test_lane_witness", "test_lane_certify", "test_progressive_s4_cascade"} <= names
    for b in BUDGETS["benchmarks"].values():
        assert b["budget_ratio"] == pytest.approx(b["measured_ratio"] * BUDGETS["headroom"], abs=2e-6)
    assert BUDGETS["ceilings_seconds"]["test_lane_fast"] == 20 * 60


def test_reference_session_passes():
    rep = CB.evaluate(CB.bench_json_from_seconds(*reference_session()), BUDGETS)
    assert rep.ok, CB.format_report(rep)
    assert all(r["status"] == "ok" for r in rep.budget_rows)


def test_uniformly_slower_machine_passes():
    rep = CB.evaluate(CB.bench_json_from_seconds(*reference_session(slowdown=1.7)), BUDGETS)
    assert rep.ok, CB.format_report(rep)


def test_injected_2x_slowdown_in_s4_fails(tmp_path, capsys):
    seconds, extra = reference_session()
    seconds["test_stage[S4]"] *= 2.0
    rep = CB.evaluate(CB.bench_json_from_seconds(seconds, extra), BUDGETS)
    assert not rep.ok
    assert [r["name"] for r in rep.budget_rows if r["status"] == "BREACH"] == ["test_stage[S4]"]
    assert len(rep.failures) == 1 and "test_stage[S4]" in rep.failures[0]
    # and through the command line: non-zero exit, the table names the breach
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(CB.bench_json_from_seconds(seconds, extra)))
    assert CB.main([str(path), "--scaling", str(tmp_path / "none.json")]) == 1
    out = capsys.readouterr().out
    assert "BREACH" in out and "test_stage[S4]" in out.split("FAIL:")[1]


def test_regression_just_below_headroom_passes_and_above_fails():
    for factor, ok in ((1.2, True), (1.3, False)):
        seconds, extra = reference_session()
        seconds["test_stage[S5]"] *= factor
        assert CB.evaluate(CB.bench_json_from_seconds(seconds, extra), BUDGETS).ok is ok, factor


def test_plan_ceiling_fails_even_when_ratios_hold():
    seconds, extra = reference_session()
    scale = 1300.0 / seconds["test_lane_fast"]  # a machine so slow the fast lane takes 1300 s > 20 min
    seconds, extra = reference_session(slowdown=scale)
    rep = CB.evaluate(CB.bench_json_from_seconds(seconds, extra), BUDGETS)
    assert not rep.ok
    assert all(r["status"] == "ok" for r in rep.budget_rows)
    assert any("test_lane_fast:" in f and "ceiling" in f for f in rep.failures)


def test_missing_benchmark_fails_unless_allowed():
    seconds, extra = reference_session()
    del seconds["test_stage[S7]"]
    assert not CB.evaluate(CB.bench_json_from_seconds(seconds, extra), BUDGETS).ok
    assert CB.evaluate(CB.bench_json_from_seconds(seconds, extra), BUDGETS, allow_missing=True).ok


def test_noise_floor_spares_jitter_of_a_millisecond_stage_but_not_a_2x_regression():
    floor = BUDGETS["noise_floor_seconds"]
    name = min((n for n in BUDGETS["benchmarks"] if n.startswith("test_stage[")),
               key=lambda n: BUDGETS["benchmarks"][n]["measured_ratio"])  # the shortest stage
    ref = reference_session()[0][name]
    assert 0.75 * ref > floor, "the 2x case below needs a stage longer than floor / 0.75"
    for factor, extra_seconds, ok in ((BUDGETS["headroom"], 0.8 * floor, True), (2.0, 0.0, False)):
        seconds, extra = reference_session()
        seconds[name] = ref * factor + extra_seconds
        assert CB.evaluate(CB.bench_json_from_seconds(seconds, extra), BUDGETS).ok is ok, (name, factor)
