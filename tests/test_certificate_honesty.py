"""A certificate that cannot be gamed: the veto gates, T-S3-02's effect size, the three-reference
attribution, the trade-off and the upstream what-if, each shown to fail on an input built to fail it.
"""

from __future__ import annotations

import copy

import numpy as np
import polars as pl
import pytest

from certification import gates as G
from certification import metrics as M
from certification.tradeoff import tradeoff_points
from engine import contracts, world
from engine.policies import load_policy
from tests.helpers import make_world, mix_policy, policy_variant, run_s3, run_s4, world_size

GATES = load_policy("certification_gates_v1").data


@pytest.fixture(scope="module")
def synthetic():
    """A 400-merchant synthetic world, its S3 and the raw mix S1 x S3 imply."""
    wld = make_world(n_merchants=400, seed=12)
    s3 = run_s3(wld)["s3_day_effects"]
    _, st, s1 = wld
    return wld, s3, M.raw_mix(s1, s3, st)


def _veto_bands(synthetic, policy) -> dict:
    wld, s3, mix = synthetic
    published = run_s4(wld, s3, policy)["s4_group_weights"]
    metrics = M.veto_metrics(mix, published)
    return {g: G.band(conds, metrics) for g, conds in GATES["veto_gates"].items()}, metrics


# ----------------------------------------------------------------------------- veto gates


def test_veto_gates_pass_when_s4_publishes_the_data(synthetic):
    bands, metrics = _veto_bands(synthetic, mix_policy(mode="off"))
    assert bands == {"T-S4-V1": "B+", "T-S4-V2": "B+"}
    assert metrics["veto_slope_min_band_median"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["veto_share_ratio_p99"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("policy", [
    {"mode": "soft_cap_blend"},  # the old default (knee 0.55, cap 0.80)
    {"mode": "hard_cap_legacy"},
], ids=["soft_cap_blend", "hard_cap_legacy"])
def test_veto_gates_fail_the_caps(synthetic, policy):
    bands, _ = _veto_bands(synthetic, mix_policy(**policy))
    assert bands["T-S4-V1"] == "FAIL" and bands["T-S4-V2"] == "FAIL", bands


@pytest.mark.parametrize("tau", [0.9, 0.6, 0.3])
def test_compression_slope_reads_the_power_exponent(synthetic, tau):
    """Under p ~ r^tau every merchant's slope is exactly tau, so the gate reads tau."""
    wld, s3, mix = synthetic
    published = run_s4(wld, s3, mix_policy(mode="power", **{"power/tau": tau}))["s4_group_weights"]
    slopes = M.compression_slopes(mix, published)
    assert slopes.height > 50
    np.testing.assert_allclose(slopes["slope"].to_numpy(), tau, rtol=0, atol=1e-9)


def test_share_ratio_catches_a_small_group_given_far_more_than_its_weight(synthetic):
    """A minor group lifted to a fixed share on every day: the island-store pattern."""
    wld, s3, mix = synthetic
    published = run_s4(wld, s3, mix_policy(mode="off"))["s4_group_weights"]
    two = published.filter(pl.len().over("merchant_id", "utc_day") == 2)
    victim = two["merchant_id"].unique().sort()[0]
    is_v = pl.col("merchant_id") == victim
    lifted = published.with_columns(p_group=pl.when(is_v).then(
        pl.when(pl.col("p_group") == pl.col("p_group").max().over("merchant_id", "utc_day")).then(0.786).otherwise(0.214))
        .otherwise(pl.col("p_group")))
    ratios = M.share_ratios(mix, lifted).filter(pl.col("merchant_id") == victim)
    assert ratios["abs_log_ratio"].max() > 0.0 and ratios.height == 2


# ----------------------------------------------------------------------------- T-S3-02 effect size


def test_t_s3_02_fails_a_day_effect_table_whose_groups_differ_only_by_noise():
    wld = make_world(n_merchants=600, seed=3)
    s3 = run_s3(wld)["s3_day_effects"]
    real = M.t_s3_02_tz_differentiation(s3, min_rows=200)
    perm = np.random.default_rng(0).permutation(s3.height)
    noise = M.t_s3_02_tz_differentiation(s3.with_columns(tz_group_id=s3["tz_group_id"].gather(perm)), min_rows=200)
    conds = GATES["realism_gates"]["T-S3-02"]
    assert G.band(conds, noise) == "FAIL", noise
    assert noise["s3_tz_effect_omega2"] < 0.002
    assert real["s3_tz_effect_omega2"] > noise["s3_tz_effect_omega2"]


def test_t_s3_02_at_b_needs_the_effect_size_not_the_p_value_alone():
    conds = GATES["realism_gates"]["T-S3-02"]
    assert G.band(conds, {"s3_tz_levene_p": 0.0, "s3_tz_effect_omega2": 0.002, "s3_tz_std_cv": 0.2}) == "FAIL"
    assert G.band(conds, {"s3_tz_levene_p": 0.0, "s3_tz_effect_omega2": 0.02, "s3_tz_std_cv": 0.01}) == "B"


# ----------------------------------------------------------------------------- attribution


@pytest.mark.parametrize("published, floor, data, veto_ok, expected", [
    ("FAIL", "FAIL", "FAIL", True, G.TOPOLOGY),
    ("B", "B", "B+", True, G.TOPOLOGY),  # the floor caps it even though the data would be better
    ("FAIL", "B+", "FAIL", True, G.UPSTREAM_OF_S4),
    ("B", "B+", "B", True, G.UPSTREAM_OF_S4),
    ("B", "B+", "FAIL", True, G.UPSTREAM_OF_S4),  # S4 improved on the data and the rest is upstream
    ("FAIL", "B+", "B", True, G.S4),  # S4 made it worse than the mix it was given
    ("FAIL", "B+", "FAIL", False, G.S4),  # a veto failure always points at S4
])
def test_attribution_truth_table(published, floor, data, veto_ok, expected):
    assert G.attribute(published, floor, data, veto_ok) == expected


def _metrics(**over):
    """Every gate metric a little on the right side of its B+ threshold, then `over`."""
    nudge = {">=": 0.0, ">": 1.0, "<=": 0.0, "<": -0.5}
    m = {}
    for conds in (*GATES["realism_gates"].values(), *GATES["veto_gates"].values()):
        for c in conds:
            t = c["B+"] if c["B+"] is not None else c["B"]
            m[c["metric"]] = t + nudge[c["op"]] * (abs(t) or 1.0)
    m.update(over)
    return m


def test_evaluate_seed_names_where_each_fix_belongs():
    floor = {"s4_max_p_median": 0.5}
    res = G.evaluate_seed(GATES, _metrics(s4_max_p_median=0.88), floor, 42, {"s4_max_p_median": 0.88})
    assert (res["T-S4-01"].band, res["T-S4-01"].attribution) == ("FAIL", G.UPSTREAM_OF_S4)
    vetoed = G.evaluate_seed(GATES, _metrics(s4_max_p_median=0.88, veto_slope_min_band_median=0.05), floor, 42,
                             {"s4_max_p_median": 0.88})
    assert vetoed["T-S4-V1"].band == "FAIL" and vetoed["T-S4-01"].attribution == G.S4
    s1 = G.evaluate_seed(GATES, _metrics(s1_residual_median=0.001), floor, 42, {})
    assert s1["T-S1-01"].attribution == "S1"


def test_a_veto_failure_fails_the_verdict_like_a_structural_check():
    res = {42: G.evaluate_seed(GATES, _metrics(veto_share_ratio_p99=1.7), {"s4_max_p_median": 0.5}, 42, {})}
    v = G.verdict({}, {42: {}}, res, {"T-X-01": "N/A"}, True, True)
    assert v["verdict"] == G.FAIL_REALISM and v["reasons"]["veto_failed"] == ["seed=42:T-S4-V2"]
    ok = {42: G.evaluate_seed(GATES, _metrics(), {"s4_max_p_median": 0.5}, 42, {})}
    assert G.verdict({}, {42: {}}, ok, {"T-X-01": "N/A"}, True, True)["verdict"] == G.PASS_BPLUS


# ----------------------------------------------------------------------------- trade-off


def test_tradeoff_points_equal_the_state_run_on_the_same_draws(synthetic):
    """The trade-off applies S4's own regulariser to the raw mix: the same numbers as running the
    state with that setting (the published S4 of a sweep point)."""
    wld, s3, mix = synthetic
    gp = copy.deepcopy(GATES)
    gp["tradeoff"]["points"] = [p for p in gp["tradeoff"]["points"]
                                if p["regularizer"]["mode"] in ("power", "soft_cap_blend")][:2]
    md = M.data_reference_days(mix)
    points = tradeoff_points(gp, load_policy("group_mix_regularizer_v1"), mix, M.s4_floor_metrics(md), M.s4_metrics(md), {}, 1)
    for point, spec in zip(points, gp["tradeoff"]["points"]):
        data = copy.deepcopy(load_policy("group_mix_regularizer_v1").data) | spec["regularizer"]
        published = run_s4(wld, s3, mix_policy(**{k: v for k, v in data.items()}))
        direct = M.s4_metrics(M.s4_merchant_days(published["s4_group_weights"]))
        assert point["gates"]["T-S4-01"]["values"]["s4_max_p_median"] == pytest.approx(direct["s4_max_p_median"], abs=1e-12)
        assert point["gates"]["T-S4-05"]["values"]["s4_entropy_median"] == pytest.approx(direct["s4_entropy_median"], abs=1e-12)


def test_no_capped_setting_of_the_shipped_tradeoff_passes_the_veto_gates(synthetic):
    _, _, mix = synthetic
    md = M.data_reference_days(mix)
    points = tradeoff_points(GATES, load_policy("group_mix_regularizer_v1"), mix, M.s4_floor_metrics(md),
                             M.s4_metrics(md), {}, 1)
    by_mode = {}
    for p in points:
        by_mode.setdefault(p["mode"], []).append(p)
    for p in by_mode["soft_cap_blend"] + by_mode["hard_cap_legacy"]:
        assert "FAIL" in (p["gates"]["T-S4-V1"]["band"], p["gates"]["T-S4-V2"]["band"]), p["label"]
    off = by_mode["off"][0]
    assert off["gates"]["T-S4-V1"]["band"] == off["gates"]["T-S4-V2"]["band"] == "B+"


# ----------------------------------------------------------------------------- the what-if world


@pytest.fixture(scope="module")
def small_world_policy():
    data = copy.deepcopy(load_policy("world_policy_v1").data)
    data["n_merchants"] = 300
    return data


@pytest.mark.parametrize("share", [0.7, 0.85])
def test_what_if_knob_reaches_its_share_and_moves_only_sites(small_world_policy, share):
    fp = "ab" * 32
    base = world.build_world(small_world_policy, 42, fp)
    data = copy.deepcopy(small_world_policy)
    data["sites"]["what_if_multi_tz_share"] = share
    moved = world.build_world(data, 42, fp)
    assert moved.merchants.equals(base.merchants)  # the same draws: merchants, classes, sizes
    assert moved.site_locations.height == base.site_locations.height
    for name in ("site_locations", "site_timezones"):
        contracts.check_key_order(name, getattr(moved, name))
    groups = moved.site_timezones.group_by("merchant_id").agg(pl.col("tzid").n_unique().alias("g"))
    assert float((groups["g"] >= 2).mean()) == pytest.approx(share, abs=1.0 / 300 + 1e-9)
    assert moved.card["what_if"]["multi_tz_share"] == pytest.approx(float((groups["g"] >= 2).mean()))
    # a merchant that did not move keeps every site, byte for byte
    stay = moved.card["what_if"]["moved_merchants"]
    assert 0 < stay < 300


def test_what_if_below_the_geography_changes_nothing(small_world_policy):
    fp = "ab" * 32
    base = world.build_world(small_world_policy, 42, fp)
    data = copy.deepcopy(small_world_policy)
    data["sites"]["what_if_multi_tz_share"] = 0.05
    same = world.build_world(data, 42, fp)
    assert same.site_timezones.equals(base.site_timezones) and same.card["what_if"]["moved_merchants"] == 0


def test_the_default_world_never_uses_the_what_if():
    assert load_policy("world_policy_v1").data["sites"].get("what_if_multi_tz_share") is None


def test_certify_pack_sections_on_a_small_world(tmp_path):
    """The certify lane config (trade-off and what-if on) over one seed of a small world: the record
    carries every new section and the report renders it."""
    from certification.lanes import score_lane
    from certification.report import render_markdown

    pol = policy_variant(tmp_path, {"world_policy_v1": world_size(150),
                                    "certification_gates_v1": lambda g: g["what_if"].update(multi_tz_shares=[0.8])})
    rec = score_lane("certify", tmp_path / "runs", pol, seeds=[42], replay=False).record
    per = rec["per_seed"]["42"]
    assert {"T-S4-V1", "T-S4-V2"} <= set(per["gates"]) and per["gates"]["T-S4-V1"]["family"] == "veto"
    assert per["gates"]["T-S4-01"]["data_band"] is not None and per["tradeoff"]
    assert [r["world"] for r in rec["what_if"]] == ["today", "multi-tz share 0.8"]
    text = render_markdown(rec, [])
    for heading in ("## Anti-artifact veto gates", "## Attribution: three references", "Where each fix belongs",
                    "## Trade-off", "## Upstream what-if"):
        assert heading in text, heading
