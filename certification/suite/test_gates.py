"""Gate suite: each test is one (seed, gate) of the certification record."""

import pytest


def _describe(result):
    vals = ", ".join(f"{k}={v:.6g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in result["values"].items())
    att = f"; attribution: {result['attribution']}" if result.get("attribution") else ""
    floor = f"; floor band {result['floor_band']}" if result.get("floor_band") else ""
    data = f"; data band {result['data_band']}" if result.get("data_band") else ""
    return f"band {result['band']} ({vals}){floor}{data}{att}"


def test_gate(record, seed_gate, record_property):
    """Hard gate: band B or better on this seed."""
    seed, gate = seed_gate
    result = record["per_seed"][seed]["gates"][gate]
    record_property("band", result["band"])
    assert result["band"] != "FAIL", _describe(result)


def test_gate_bplus(record, seed_gate, record_property):
    """Target band: B+ (a gate that holds B only is reported xfail, not hidden)."""
    seed, gate = seed_gate
    result = record["per_seed"][seed]["gates"][gate]
    record_property("band", result["band"])
    if result["band"] != "B+":
        pytest.xfail(_describe(result))


def test_structural(record, seed_check):
    seed, check = seed_check
    res = record["per_seed"][seed]["structural"][check]
    assert res["ok"], res["detail"]


def test_precondition(record, precondition):
    res = record["preconditions"][precondition]
    assert res["ok"], res["detail"]


def test_cross_seed(record):
    x = record["cross_seed"]
    assert x["T-X-01"] != "FAIL", f"CVs {x['cv']}"


def test_no_seed_specific_collapse(record):
    assert record["cross_seed"].get("T-X-02") != "FAIL", record["reasons"]["realism_failed"]
