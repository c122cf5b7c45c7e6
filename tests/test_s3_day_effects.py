"""S3 day effects: coverage and PK order, the RNG counter law, determinism and shard invariance,
volatility regimes (the scalar negative control must fail T-S3-01's B+ tail), local-weekday weekly
terms that differ across a merchant's groups, clip accounting, and every bad input named.

The synthetic upstream is tests.helpers.make_world (shared with the S4, metric and certificate
tests): about half the merchants in one tzid, the rest in 2..8 tzids with uneven site counts, and
non-uniform (Dirichlet) S1 weights.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt

import numpy as np
import polars as pl
import pytest

from certification import metrics as M
from engine import contracts
from engine.calendar import tz_offsets
from engine.errors import EngineError
from engine.policies import load_policy
from engine.rng import STREAM_S3, Stream
from engine.states import s3_day_effects as s3
from tests.helpers import SITE_PK, context, day_policy, make_world, placed_world, run_s3

CTX = context()


@pytest.fixture(scope="module")
def world():
    return make_world(n_merchants=160, seed=3)


@pytest.fixture(scope="module")
def out(world):
    return run_s3(world)


def test_coverage_schema_and_pk_order(world, out):
    df = out["s3_day_effects"]
    _, st, _ = world
    groups = st.group_by("merchant_id").agg(pl.col("tzid").n_unique().alias("g"))
    assert df.height == 28 * int(groups["g"].sum())
    contracts.conform("s3_day_effects", df)  # exact column set and types
    contracts.check_key_order("s3_day_effects", df)  # PK order, no duplicate key
    cells = df.group_by("merchant_id").agg(pl.col("utc_day").n_unique().alias("d"), pl.col("tz_group_id").n_unique().alias("g"))
    joined = cells.join(groups, on="merchant_id", suffix="_st")
    assert (joined["d"] == 28).all() and (joined["g"] == joined["g_st"]).all()
    assert df["utc_day"].min() == "2026-01-05" and df["utc_day"].max() == "2026-02-01"
    assert (df["created_utc"] == CTX.created_utc).all()
    assert out["_report"]["rows"] == df.height


def recompute_z(df: pl.DataFrame, ctx=CTX) -> np.ndarray:
    """Each row's Z by the documented law, from the recorded counters alone: the group's own AR(1)
    over innovations at its row counters, plus the merchant-wide AR(1) at 2^62 + day index."""
    v2 = load_policy("day_effect_policy_v1").data["sigma_gamma_policy_v2"]
    rho, w = v2["persistence"]["ar1"], v2["persistence"]["shared_share"]
    stream = Stream(ctx.draws_of, ctx.seed, STREAM_S3)
    e = stream.normals(df["rng_counter_hi"].to_numpy(), df["rng_counter_lo"].to_numpy())
    keyed = df.select("merchant_id", "tz_group_id", "utc_day").with_columns(
        e=pl.Series(e), day=pl.col("utc_day").rank("dense").over("merchant_id").cast(pl.Int64) - 1,
        row=pl.int_range(pl.len()))
    out = np.empty(df.height)
    for (_, _), g in keyed.sort("merchant_id", "tz_group_id", "utc_day").group_by(["merchant_id", "tz_group_id"],
                                                                                   maintain_order=True):
        y, x = 0.0, 0.0
        shared = stream.normals(np.full(g.height, g["merchant_id"][0], dtype=np.uint64),
                                np.uint64(1 << 62) + g["day"].to_numpy().astype(np.uint64))
        for k, (row, ek, sk) in enumerate(zip(g["row"].to_list(), g["e"].to_list(), shared.tolist())):
            y = ek if k == 0 else rho * y + np.sqrt(1 - rho * rho) * ek
            x = sk if k == 0 else rho * x + np.sqrt(1 - rho * rho) * sk
            out[row] = np.sqrt(w) * x + np.sqrt(1 - w) * y
    return out


def holiday_term(df: pl.DataFrame, site_timezones: pl.DataFrame, merchants: pl.DataFrame) -> np.ndarray:
    """Each row's holiday log-effect: the class's effect when the group's country (where its sites
    are) has a public holiday on the local date at 12:00 UTC (engine.calendar)."""
    from engine.calendar import epoch_day, holiday_table

    effects = load_policy("day_effect_policy_v1").data["sigma_gamma_policy_v2"]["holidays"]["log_effect_by_segment"]
    country = site_timezones.group_by("merchant_id", "tzid").agg(pl.col("legal_country_iso").min().alias("c"))
    rows = df.join(country, left_on=["merchant_id", "tz_group_id"], right_on=["merchant_id", "tzid"], how="left",
                   maintain_order="left").join(merchants.select("merchant_id", "merchant_class"), on="merchant_id",
                                               how="left", maintain_order="left")
    first = epoch_day(df["utc_day"].min())
    n_days = epoch_day(df["utc_day"].max()) - first + 1
    countries = sorted(set(rows["c"].to_list()))
    table = holiday_table(countries, first, n_days)
    tzs = sorted(set(rows["tz_group_id"].to_list()))
    noon = tz_offsets(tzs, first, n_days)[:, :, 48]
    day = np.array([epoch_day(d) for d in rows["utc_day"].to_list()]) - first
    tz_i = np.array([tzs.index(t) for t in rows["tz_group_id"].to_list()])
    local = day + (43_200 + noon[tz_i, day]) // 86_400 + 1  # index into the table (one day of margin)
    on = table[np.array([countries.index(c) for c in rows["c"].to_list()]), local]
    eff = np.array([effects.get(c, effects["default"]) for c in rows["merchant_class"].to_list()])
    return np.where(on, eff, 0.0)


def test_counter_law_and_recomputable_draws(world, out):
    df = out["s3_day_effects"]
    assert (df["rng_stream_id"] == STREAM_S3).all()
    assert (df["rng_counter_hi"] == df["merchant_id"]).all()
    # counter_lo = day_index * n_groups + group_index, i.e. 0..D*n-1 in PK order per merchant
    expect = df.select(pl.int_range(pl.len(), dtype=pl.UInt64).over("merchant_id").alias("k"))["k"]
    assert (df["rng_counter_lo"] == expect).all()
    assert int(df["rng_counter_lo"].max()) < 2**62  # above: the merchant-day and merchant regions
    # The residual log_gamma + sigma^2/2 - sigma Z - holiday is the weekly term: bounded by its
    # amplitude (+ the small mean-one correction), which shows each row's Z follows the documented
    # law from the recorded counters (the synthetic world's two-letter codes include real countries).
    z = recompute_z(df)
    sig = df["sigma_gamma"].to_numpy()
    merchants, st, _ = world
    hol = holiday_term(df, st, merchants)
    assert (hol != 0).sum() > 0
    resid = df["log_gamma"].to_numpy() + 0.5 * sig**2 - sig * z - hol
    assert np.all(np.abs(resid) <= df["weekly_amp"].to_numpy() * 1.1 + 1e-12)


def test_scalar_mode_is_exactly_the_lognormal():
    world = make_world(n_merchants=30, seed=5)
    df = run_s3(world, day_policy(mode="scalar", day_range={"start": "2026-01-01", "end": "2026-01-10"}))["s3_day_effects"]
    z = Stream(CTX.draws_of, CTX.seed, STREAM_S3).normals(
        df["rng_counter_hi"].to_numpy(), df["rng_counter_lo"].to_numpy())
    s = 0.06
    np.testing.assert_allclose(df["log_gamma"].to_numpy(), -0.5 * s * s + s * z, rtol=0, atol=1e-15)
    assert (df["sigma_source"] == "scalar").all() and (df["weekly_amp"] == 0).all()


def test_deterministic_and_seeded(world, out):
    again = run_s3(world)["s3_day_effects"]
    assert again.equals(out["s3_day_effects"])
    other = run_s3(world, ctx=dataclasses.replace(CTX, seed=7))["s3_day_effects"]
    assert not np.array_equal(other["gamma"].to_numpy(), out["s3_day_effects"]["gamma"].to_numpy())


def test_shard_invariance(world, out):
    merchants, st, s1 = world
    full = out["s3_day_effects"]
    ids = merchants["merchant_id"].to_numpy()
    rng = np.random.default_rng(1)
    shard = pl.Series(rng.choice(ids, size=len(ids) // 3, replace=False), dtype=pl.UInt64)
    # a shard, with its input rows shuffled: the same bytes for the same merchants
    part = run_s3((merchants.filter(pl.col("merchant_id").is_in(shard.to_list())).sample(fraction=1.0, shuffle=True, seed=2),
                   st.filter(pl.col("merchant_id").is_in(shard.to_list())).sample(fraction=1.0, shuffle=True, seed=3), s1))
    assert part["s3_day_effects"].equals(full.filter(pl.col("merchant_id").is_in(shard.to_list())))


def test_sigma_provenance_regimes_and_bounds(out):
    df = out["s3_day_effects"]
    v2 = load_policy("day_effect_policy_v1").data["sigma_gamma_policy_v2"]
    assert df["sigma_gamma"].min() >= v2["sigma_min"] and df["sigma_gamma"].max() <= v2["sigma_max"]
    src = df.select("merchant_id", "sigma_source").unique()
    assert src["sigma_source"].str.contains(r"^segment:[a-z_]+\|(region:[A-Za-z]+|tz:[A-Za-z_/]+)\|regime:(stable|bursty)").all()
    bursty = df.group_by("merchant_id").agg(pl.col("sigma_source").str.contains("regime:bursty").any().alias("b"))
    share = float(bursty["b"].mean())
    assert 0.08 < share < 0.35  # policy share 0.2 over 160 merchants
    # every row of a merchant shares one regime (a per-merchant draw), sigma is constant per (merchant, group)
    assert df.group_by("merchant_id", "tz_group_id").agg(pl.col("sigma_gamma").n_unique())["sigma_gamma"].max() == 1


def test_sigma_clamp_is_recorded(world):
    df = run_s3(world, **{"sigma_gamma_policy_v2/sigma_max": 0.06})["s3_day_effects"]
    at_max = df.filter(pl.col("sigma_gamma") == 0.06)
    assert at_max.height > 0 and at_max["sigma_source"].str.ends_with("|clamp:max").all()
    assert df["sigma_gamma"].max() == 0.06


def test_clipping_is_counted(world):
    res = run_s3(world, **{"sigma_gamma_policy_v2/gamma_clip": {"min": 0.95, "max": 1.05}})
    df, rep = res["s3_day_effects"], res["_report"]
    g = df["gamma"]
    assert g.min() >= 0.95 and g.max() <= 1.05
    assert rep["clipped_rows"] == rep["clipped_low"] + rep["clipped_high"] > 0
    assert rep["clipped_rows"] == int(((g == 0.95) | (g == 1.05)).sum())
    np.testing.assert_allclose(np.exp(df["log_gamma"].to_numpy()), g.to_numpy(), rtol=1e-15)
    assert run_s3(world)["_report"]["clipped_rows"] == 0  # the shipped clip is not under pressure


def test_weekly_term_follows_local_weekday():
    days = [(dt.date(2026, 1, 5) + dt.timedelta(days=i)).isoformat() for i in range(14)]  # Mon 5 Jan
    tz = ["Asia/Tokyo", "Europe/London", "America/Los_Angeles"]
    shape = np.array([[-1.0, -0.5, 0.0, 0.0, 0.5, 1.0, 0.0]])
    amp = np.array([0.1])
    first = dt.date(2026, 1, 5).toordinal() - dt.date(1970, 1, 1).toordinal()
    noon = tz_offsets(tz, first, len(days))[:, :, 48]
    utc_wd = np.array([dt.date.fromisoformat(d).weekday() for d in days])
    table = s3._weekly_table(noon, np.arange(3), np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64), utc_wd, amp, shape)
    corr = np.log(np.mean(np.exp(amp[0] * shape[0])))
    wd = np.array([dt.date.fromisoformat(d).weekday() for d in days])
    # London in winter is UTC+0: exactly the UTC weekday
    np.testing.assert_allclose(table[1], 0.1 * shape[0][wd] - corr, atol=1e-15)
    # Tokyo is UTC+9: 15 h of the UTC day are local day w, 9 h are w + 1
    np.testing.assert_allclose(table[0], 0.1 * (15 / 24 * shape[0][wd] + 9 / 24 * shape[0][(wd + 1) % 7]) - corr, atol=1e-15)
    # Los Angeles is UTC-8: 8 h belong to the previous local day
    np.testing.assert_allclose(table[2], 0.1 * (8 / 24 * shape[0][(wd - 1) % 7] + 16 / 24 * shape[0][wd]) - corr, atol=1e-15)
    # the cycle therefore differs across a merchant's groups and survives renormalisation in S4:
    # the group ratio exp(w_Tokyo - w_LA) is not constant over the week
    assert np.ptp(table[0] - table[2]) > 0.05
    # a Fri/Sat weekend zone is the profile rotated by one day
    shifted = s3._weekly_table(noon[1:2], np.zeros(1, dtype=np.int64), np.array([1]), np.zeros(1, dtype=np.int64), utc_wd, amp,
                               shape)
    np.testing.assert_allclose(shifted[0], 0.1 * shape[0][(wd + 1) % 7] - corr, atol=1e-15)


def test_weekly_term_differs_within_merchants(out):
    """On the state output: for multi-tz merchants spanning offsets, the day-by-day difference of
    the weekly residual between groups is not constant (the weekly term does not cancel in S4)."""
    df = out["s3_day_effects"]
    z = recompute_z(df)
    sig = df["sigma_gamma"].to_numpy()
    w = df.with_columns(w=pl.Series(df["log_gamma"].to_numpy() + 0.5 * sig**2 - sig * z))
    spread = (w.group_by("merchant_id", "utc_day").agg((pl.col("w").max() - pl.col("w").min()).alias("r"))
              .group_by("merchant_id").agg(pl.col("r").max()))
    assert (spread["r"] > 1e-3).mean() > 0.2


def test_realism_gates_bplus_and_scalar_negative_control():
    world = make_world(n_merchants=400, seed=11)
    pol = dict(day_range={"start": "2026-01-01", "end": "2026-02-14"})
    v2 = run_s3(world, day_policy(**pol))
    m = M.s3_metrics(v2["s3_day_effects"], clipped_rows=v2["_report"]["clipped_rows"])
    assert m["s3_std_median"] >= 0.04 and m["s3_std_p90_over_p50"] >= 1.25  # T-S3-01 B+
    assert m["s3_tz_levene_p"] < 1e-3 and m["s3_tz_std_cv"] >= 0.02  # T-S3-02 B+
    assert m["s3_min_gamma"] > 0 and m["s3_clipped_share"] <= 0.01  # T-S3-03
    assert m["s3_mean_gamma_dev"] <= 0.02 and m["s3_max_abs_log_gamma"] <= 4
    scalar = run_s3(world, day_policy(mode="scalar", **pol))["s3_day_effects"]
    ms = M.t_s3_01_merchant_std(scalar)
    assert ms["s3_std_p90_over_p50"] < 1.25  # no regimes: no visible upper tail -> fails B+


def _residual_acf(df: pl.DataFrame) -> pl.Series:
    """Lag-1 autocorrelation per (merchant, group) of log_gamma net of its weekday means."""
    r = df.with_columns(wd=pl.col("utc_day").str.to_date().dt.weekday()).with_columns(
        r=pl.col("log_gamma") - pl.col("log_gamma").mean().over("merchant_id", "tz_group_id", "wd"))
    c = pl.col("r") - pl.col("r").mean()
    return r.sort("merchant_id", "tz_group_id", "utc_day").group_by("merchant_id", "tz_group_id").agg(
        ((c * c.shift(1)).sum() / (c * c).sum()).alias("acf"))["acf"]


def test_day_effects_have_memory_and_a_shared_shock(out):
    acf = _residual_acf(out["s3_day_effects"]).median()
    assert 0.3 < acf < 0.6  # AR(1) with rho 0.5, less a little for the weekday demeaning
    # two groups of one merchant move together: the shared shock's share of the variance
    df = out["s3_day_effects"].with_columns(z=pl.Series(recompute_z(out["s3_day_effects"])))
    wide = df.filter(pl.col("tz_group_id") == pl.col("tz_group_id").min().over("merchant_id")).select(
        "merchant_id", "utc_day", pl.col("z").alias("a")).join(
        df.filter(pl.col("tz_group_id") == pl.col("tz_group_id").max().over("merchant_id"))
        .filter(pl.len().over("merchant_id") > 0).select("merchant_id", "utc_day", pl.col("z").alias("b")),
        on=["merchant_id", "utc_day"])
    wide = wide.filter(pl.col("a") != pl.col("b"))  # multi-group merchants only
    w = load_policy("day_effect_policy_v1").data["sigma_gamma_policy_v2"]["persistence"]["shared_share"]
    assert np.corrcoef(wide["a"], wide["b"])[0, 1] == pytest.approx(w, abs=0.08)


def test_iid_days_fail_the_memory_gate_recipe():
    """Today's old behaviour (no persistence) is what the T-S3-04 negative control must catch."""
    world = make_world(n_merchants=200, seed=4)
    iid = run_s3(world, **{"sigma_gamma_policy_v2/persistence": {"ar1": 0.0, "shared_share": 0.0}})
    assert abs(_residual_acf(iid["s3_day_effects"]).median()) < 0.1


def test_holidays_and_weekends_come_from_the_country_calendar():
    pol = day_policy(day_range={"start": "2026-01-01", "end": "2026-03-31"})
    # two real countries: a US merchant (New York) and a Saudi one (Riyadh), one zone each
    real_countries = (*placed_world([(11, "US", "grocery"), (22, "SA", "grocery")],
                                    [(11, "US", "America/New_York", 1), (22, "SA", "Asia/Riyadh", 1)]), None)
    res = run_s3(real_countries, pol)
    df = res["s3_day_effects"]
    assert res["_report"]["holiday_cells"] > 0
    sig = df["sigma_gamma"].to_numpy()
    resid = df.with_columns(w=pl.Series(df["log_gamma"].to_numpy() + 0.5 * sig**2 - sig * recompute_z(df)))
    effect = pol.data["sigma_gamma_policy_v2"]["holidays"]["log_effect_by_segment"]["grocery"]
    us = resid.filter(pl.col("merchant_id") == 11)
    # 1 January is a US public holiday: the grocery holiday effect on top of the weekly term
    new_year = us.filter(pl.col("utc_day") == "2026-01-01")["w"][0]
    amp = us["weekly_amp"][0]
    assert new_year < effect + amp * 1.1 and new_year > effect - amp * 1.1
    # Saudi Arabia's weekend is Friday/Saturday: its weekly profile is the Sat/Sun one moved a day earlier
    sa = resid.filter(pl.col("merchant_id") == 22).with_columns(wd=pl.col("utc_day").str.to_date().dt.weekday())
    by_wd = sa.group_by("wd").agg(pl.col("w").median()).sort("wd")["w"].to_numpy()
    shape = np.asarray(pol.data["sigma_gamma_policy_v2"]["weekly_shape_by_segment"]["grocery"])
    assert int(np.argmax(by_wd)) + 1 == int(np.argmax(shape))  # the Saturday peak falls on Friday there


@pytest.mark.parametrize("changes, field", [
    ({"day_range": {"start": "2026-03-01", "end": "2026-02-01"}}, "/day_range"),
    ({"day_range": {"start": "2026-02-30", "end": "2026-03-01"}}, "/day_range"),
    ({"sigma_gamma_policy_v2/sigma_min": 0.5, "sigma_gamma_policy_v2/sigma_max": 0.2}, "/sigma_gamma_policy_v2/sigma_min"),
    ({"sigma_gamma_policy_v2/gamma_clip": {"min": 3.0, "max": 0.5}}, "/sigma_gamma_policy_v2/gamma_clip"),
    ({"sigma_gamma_policy_v2/gamma_clip": {"min": 1.2, "max": 4.0}}, "/sigma_gamma_policy_v2/gamma_clip"),
    ({"sigma_gamma_policy_v2/regimes": [{"name": "stable", "share": 0.7, "sigma_multiplier": 1.0}]},
     "/sigma_gamma_policy_v2/regimes"),
    ({"mode": "bogus"}, "/mode"),
])
def test_bad_policy_raises(world, changes, field):
    with pytest.raises(EngineError) as err:
        run_s3(world, day_policy(**changes))
    assert err.value.where == "day_effect_policy_v1" and err.value.field == field


def test_bad_policy_file_fails_schema(tmp_path):
    data = copy.deepcopy(load_policy("day_effect_policy_v1").data)
    data["sigma_gamma_policy_v2"]["surprise"] = 1  # additionalProperties: false
    (tmp_path / "day_effect_policy_v1.json").write_text(__import__("json").dumps(data))
    with pytest.raises(EngineError):
        load_policy("day_effect_policy_v1", tmp_path)


def test_bad_inputs_raise(world):
    merchants, st, s1 = world
    orphan = st.head(1).with_columns(merchant_id=pl.lit(12345, dtype=pl.UInt64))
    with pytest.raises(EngineError, match="no merchants row"):
        run_s3((merchants, pl.concat([orphan, st]).sort(SITE_PK), s1))
    with pytest.raises(EngineError, match="not an IANA time zone"):
        run_s3((merchants, st.with_columns(tzid=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("Mars/Olympus"))
                                           .otherwise(pl.col("tzid"))), s1))
    with pytest.raises(EngineError, match="duplicate merchant_id"):
        run_s3((pl.concat([merchants, merchants.head(1)]), st, s1))


def test_empty_world_gives_empty_table():
    merchants, st, s1 = make_world(n_merchants=5, seed=1)
    res = run_s3((merchants, st.head(0), s1))
    assert res["s3_day_effects"].height == 0
    contracts.conform("s3_day_effects", res["s3_day_effects"])
