"""Realism the plan's gates did not see: local-time coherence (T-S5-01), heavy-tailed merchants
(T-R-01), day effects with memory (T-S3-04, in test_s3_day_effects) and public holidays (T-S3-05,
T-R-02). Each gate passes on the shipped policies and fails on the old behaviour (negative control),
both runs on one small world and the same draws (the negative control reuses world..S4).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from certification import gates as G
from certification import metrics as M
from engine import roster as R
from engine.pipeline import Pipeline
from engine.policies import load_policy
from tests.helpers import placed_world, policy_variant, world_size

GATES = load_policy("certification_gates_v1").data["realism_gates"]
SEED = 42


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The shipped laws and the old ones on one 300-merchant world (same draws)."""
    tmp = tmp_path_factory.mktemp("breadth")
    root = tmp / "runs"
    shipped = Pipeline(SEED, root, policy_variant(tmp, {"world_policy_v1": world_size(300)}, folder="shipped")).run()
    old = policy_variant(tmp, {
        "world_policy_v1": world_size(300),
        "roster_policy_v1": lambda d: (d.__setitem__("intraday_clock", "home"),
                                       d["rate"].update(size_exponent=0.25, merchant_volume_sigma=0.3,
                                                        site_productivity_sigma=0.0, size_reference_sites=16)),
        "route_rng_policy_v1": lambda d: d.__setitem__("group_choice", "day_mix"),
        "day_effect_policy_v1": lambda d: d["sigma_gamma_policy_v2"]["holidays"].__setitem__(
            "log_effect_by_segment", {"default": 0.0})}, folder="old")
    before = Pipeline(SEED, root, old).run()
    return shipped, before


def _metrics(result) -> dict:
    load = result.load
    out = {}
    for part in (M.merchant_concentration(load("s5_arrival_roster")),
                 M.holiday_effects(load("s3_day_effects"), load("s5_arrival_roster"), load("site_timezones"), load("merchants")),
                 M.night_share_gap(load("s5_arrival_roster"), load("rng_event_alias_pick_group"), load("s1_site_weights"),
                                   load("site_timezones"))):
        part.pop(M.SERIES, None)
        out.update(part)
    return out


@pytest.fixture(scope="module")
def metrics(runs):
    shipped, before = runs
    return _metrics(shipped), _metrics(before)


def test_the_negative_control_reuses_the_world_and_s1(runs):
    _, before = runs
    status = {r.name: r.status for r in before.stages}
    assert status["world"] == status["S1"] == status["S2"] == "reused"


@pytest.mark.parametrize("gate", ["T-S5-01", "T-R-01", "T-R-02", "T-S3-05"])
def test_gate_passes_the_shipped_laws_and_fails_the_old_ones(metrics, gate):
    shipped, before = metrics
    assert G.band(GATES[gate], shipped) != "FAIL", {k: shipped.get(c["metric"]) for c in GATES[gate] for k in [c["metric"]]}
    assert G.band(GATES[gate], before) == "FAIL", {k: before.get(c["metric"]) for c in GATES[gate] for k in [c["metric"]]}


def test_old_routing_puts_far_sites_to_work_at_night(metrics):
    shipped, before = metrics
    assert before["s5_night_share_far"] > 0.15 > shipped["s5_night_share_far"]
    assert shipped["s5_far_arrivals"] > 1000


# ----------------------------------------------------------------------------- the roster's laws


def _one_merchant(zones: list[tuple[str, str, int]], cls="grocery", home="US"):
    """Merchant 7 with n sites in each (country, tzid, n) of `zones`."""
    return placed_world([(7, home, cls)], [(7, iso, tz, n) for iso, tz, n in zones])


def _hours(roster: pl.DataFrame, tz: str) -> np.ndarray:
    from zoneinfo import ZoneInfo

    return np.array([dt.datetime.fromisoformat(t[:19] + "+00:00").astimezone(ZoneInfo(tz)).hour
                     for t in roster["utc_timestamp"]])


def test_a_two_zone_merchant_keeps_both_clocks():
    """Half its sites in New York, half in Tokyo: half its arrivals follow Tokyo's day, whose afternoon
    is New York's night, so a good share of them fall in New York's small hours instead of almost none."""
    policy = load_policy("roster_policy_v1").data
    grid = ("2026-01-01", "2026-03-31")
    both, _ = R.build_roster(*_one_merchant([("US", "America/New_York", 5), ("JP", "Asia/Tokyo", 5)]), policy, grid,
                             "12" * 32, SEED)
    home_only, _ = R.build_roster(*_one_merchant([("US", "America/New_York", 5), ("JP", "Asia/Tokyo", 5)]),
                                  {**policy, "intraday_clock": "home"}, grid, "12" * 32, SEED)
    night_ny = lambda r: float(np.mean(_hours(r, "America/New_York") < 6))  # noqa: E731
    assert night_ny(home_only) < 0.06 < 0.12 < night_ny(both)


def test_holidays_dip_the_home_country_volume():
    policy = load_policy("roster_policy_v1").data
    effects = {"default": -0.5}
    grid = ("2026-01-01", "2026-01-31")
    world = _one_merchant([("US", "America/New_York", 300)])
    with_h, _ = R.build_roster(*world, policy, grid, "12" * 32, SEED, effects)
    without, _ = R.build_roster(*world, policy, grid, "12" * 32, SEED, {"default": 0.0})
    per = lambda r: r.group_by("utc_day").len().sort("utc_day")  # noqa: E731
    a, b = per(with_h), per(without)
    new_year = a.filter(pl.col("utc_day") == "2026-01-01")["len"][0] / b.filter(pl.col("utc_day") == "2026-01-01")["len"][0]
    other = a.filter(pl.col("utc_day") == "2026-01-08")["len"][0] / b.filter(pl.col("utc_day") == "2026-01-08")["len"][0]
    assert new_year < 0.75 and other == 1.0


def test_saudi_weekend_moves_the_weekly_peak_a_day_earlier():
    """The same class profile (peak on Saturday for a Sat/Sun weekend) peaks on Friday in Riyadh."""
    policy = load_policy("roster_policy_v1").data
    grid = ("2026-01-05", "2026-03-29")
    us, _ = R.build_roster(*_one_merchant([("US", "America/New_York", 3000)]), policy, grid, "12" * 32, SEED)
    sa, _ = R.build_roster(*_one_merchant([("SA", "Asia/Riyadh", 3000)], home="SA"), policy, grid, "12" * 32, SEED)
    peak = lambda r: int(r.group_by("utc_day").len().with_columns(  # noqa: E731
        wd=pl.col("utc_day").str.to_date().dt.weekday()).group_by("wd").agg(pl.col("len").mean()).sort("len")["wd"][-1])
    assert peak(sa) == peak(us) - 1
