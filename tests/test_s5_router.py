"""S5 router: two events per arrival under the counter law, site tz = group, frequencies match
S4 x S1, determinism and shard invariance, trace reconciliation, and every bad input named."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from engine import alias, contracts
from engine.errors import EngineError
from engine.identity import site_ids
from engine.policies import load_policy
from engine.rng import STREAM_S5, Stream
from engine.states import s5_router
from tests.helpers import context

TZS = ["America/Chicago", "America/Los_Angeles", "America/New_York", "America/Sao_Paulo", "Asia/Singapore",
       "Asia/Tokyo", "Australia/Sydney", "Europe/Berlin", "Europe/London", "Europe/Paris"]
ISOS = ["BR", "DE", "FR", "GB", "JP", "US"]
CLASSES = ["digital", "fuel", "grocery", "restaurants", "travel"]
DAY0 = np.datetime64("2026-01-01", "D").astype(np.int64)
CTX = context()


def synth_world(n_merchants=200, n_arrivals=100_000, n_days=28, mean_sites=10, seed=7):
    """A small world in the contract shapes S5 reads: merchants, S1, site_timezones, S4, roster.

    Merchant ids span the whole u64 range (some above 2^63); each merchant has 1-4 tz groups,
    every group at least one site; S4 mixes are base shares times log-normal day effects.
    """
    rng = np.random.default_rng(seed)
    mids = np.unique(rng.integers(0, np.iinfo(np.uint64).max, size=n_merchants, dtype=np.uint64, endpoint=True))
    n_m = mids.size
    site_rows = []
    for m in mids:
        groups = sorted(rng.choice(TZS, size=int(rng.integers(1, 5)), replace=False))
        k = max(len(groups), int(rng.poisson(mean_sites)) + 2)
        tz = list(groups) + list(rng.choice(groups, size=k - len(groups)))
        iso = rng.choice(ISOS, size=k)
        w = rng.dirichlet(np.full(k, 0.8))
        site_rows += [(int(m), str(c), str(t), float(p)) for c, t, p in zip(iso, tz, w)]
    sites = (pl.DataFrame(site_rows, schema={"merchant_id": pl.UInt64, "legal_country_iso": pl.String,
                                             "tzid": pl.String, "p_weight": pl.Float64}, orient="row")
             .with_columns(site_order=pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over("merchant_id", "legal_country_iso")))
    s1 = sites.select("merchant_id", "legal_country_iso", "site_order", "p_weight").sort(s5_router.SITE_PK)
    tzt = sites.select("merchant_id", "legal_country_iso", "site_order", "tzid",
                       tzid_source=pl.lit("synthetic")).sort(s5_router.SITE_PK)

    base = sites.group_by("merchant_id", "tzid").agg(base_share=pl.col("p_weight").sum())
    days = pl.DataFrame({"day": np.arange(n_days, dtype=np.int64)})
    s4 = base.join(days, how="cross").sort("merchant_id", "day", "tzid")
    s4 = s4.with_columns(gamma=pl.Series(np.exp(rng.normal(-0.045, 0.3, s4.height))))
    s4 = (s4.with_columns(mass_raw=pl.col("base_share") * pl.col("gamma"))
          .with_columns(p_group=pl.col("mass_raw") / pl.col("mass_raw").sum().over("merchant_id", "day"))
          .select("merchant_id", utc_day=pl.from_epoch(pl.col("day") + DAY0, time_unit="d").dt.to_string("%Y-%m-%d"),
                  tz_group_id="tzid", p_group="p_group", base_share="base_share", gamma="gamma", mass_raw="mass_raw"))

    merchants = pl.DataFrame({
        "merchant_id": mids,
        "home_country_iso": rng.choice(ISOS, n_m),
        "mcc": rng.integers(4000, 6000, n_m).astype(np.int32),
        "merchant_class": rng.choice(CLASSES, n_m),
    }).with_columns(is_virtual=pl.col("merchant_class") == "digital",
                    channel=pl.when(pl.col("merchant_class") == "digital").then(pl.lit("card_not_present"))
                    .otherwise(pl.lit("card_present")))
    merchants = merchants.select("merchant_id", "home_country_iso", "mcc", "merchant_class", "channel", "is_virtual")

    activity = rng.gamma(1.0, 1.0, n_m)
    pick = rng.choice(n_m, size=n_arrivals, p=activity / activity.sum())
    micros = rng.integers(0, n_days * 86_400_000_000, n_arrivals) + DAY0 * 86_400_000_000
    roster = (pl.DataFrame({"merchant_id": mids[pick], "t": micros})
              .unique(["merchant_id", "t"], keep="first", maintain_order=True)
              .join(merchants.select("merchant_id", "is_virtual", "merchant_class", "channel"), on="merchant_id",
                    how="left", maintain_order="left")
              .with_columns(ts=pl.from_epoch("t", time_unit="us"))
              .sort("t", "merchant_id")
              .select("merchant_id", utc_timestamp=pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ"),
                      utc_day=pl.col("ts").dt.to_string("%Y-%m-%d"), is_virtual="is_virtual",
                      merchant_class="merchant_class", channel="channel"))
    return {"merchants": merchants, "s1_site_weights": s1, "site_timezones": tzt, "s4_group_weights": s4,
            "s5_arrival_roster": roster}


def policy(**over):
    p = load_policy("route_rng_policy_v1")
    return {"route_rng_policy_v1": dataclasses.replace(p, data={**p.data, **over}),
            "roster_policy_v1": load_policy("roster_policy_v1")}


def route(world, ctx=CTX, **over):
    inputs = {k: world[k] for k in s5_router.READS}
    out = s5_router.run(inputs, policy(**over), ctx)
    out.pop("_report", None)
    return out


@pytest.fixture(scope="module")
def world():
    return synth_world()


@pytest.fixture(scope="module")
def small_world():
    return synth_world(n_merchants=30, n_arrivals=3_000, n_days=5, mean_sites=4, seed=17)


@pytest.fixture(scope="module")
def routed(world):
    return route(world, selection_log=True)


def with_seq(roster: pl.DataFrame) -> pl.DataFrame:
    """The law's arrival_seq, computed independently: ordinal within merchant in roster order."""
    return roster.with_columns(arrival_seq=pl.int_range(pl.len(), dtype=pl.UInt64).over("merchant_id"))


# ---------------------------------------------------------------------------------------------


def test_outputs_conform_to_contracts(routed):
    for name in ("rng_event_alias_pick_group", "rng_event_alias_pick_site", "rng_trace_s5", "s5_selection_log"):
        contracts.conform(name, routed[name])
        contracts.check_key_order(name, routed[name])
    assert routed["rng_event_alias_pick_group"].columns == contracts.get("rng_event_alias_pick_group").schema.names


def test_selection_log_is_off_by_default(world):
    assert "s5_selection_log" not in route(world)


def test_two_events_per_arrival_with_law_counters(world, routed):
    roster = with_seq(world["s5_arrival_roster"])
    n = roster.height
    g, s = routed["rng_event_alias_pick_group"], routed["rng_event_alias_pick_site"]
    assert g.height == n and s.height == n
    assert (g["module"] == "2B.S5.router").all() and (g["substream_label"] == "alias_pick_group").all()
    assert (s["module"] == "2B.S5.router").all() and (s["substream_label"] == "alias_pick_site").all()

    # every arrival has exactly one group and one site event, keyed by the independent ordinal
    want = roster.select("merchant_id", "arrival_seq", "utc_day").sort("merchant_id", "arrival_seq")
    for ev in (g, s):
        assert ev.select("merchant_id", "arrival_seq", "utc_day").equals(want)
        assert (ev["rng_counter_before_hi"] == ev["merchant_id"]).all()
        assert (ev["rng_counter_after_hi"] == ev["merchant_id"]).all()
        assert (ev["draws"] == 1).all() and (ev["blocks"] == 1).all()
    k2 = g["arrival_seq"] * 2
    assert (g["rng_counter_before_lo"] == k2).all() and (g["rng_counter_after_lo"] == k2 + 1).all()
    assert (s["rng_counter_before_lo"] == k2 + 1).all() and (s["rng_counter_after_lo"] == k2 + 2).all()

    # no two events share a counter
    both = pl.concat([g.select("rng_counter_before_hi", "rng_counter_before_lo"),
                      s.select("rng_counter_before_hi", "rng_counter_before_lo")])
    assert both.n_unique() == 2 * n


def test_site_in_chosen_group_and_site_id_law(world, routed):
    g, s = routed["rng_event_alias_pick_group"], routed["rng_event_alias_pick_site"]
    assert (g["tz_group_id"] == s["tz_group_id"]).all()
    tz = world["site_timezones"].select(s5_router.SITE_PK + ["tzid"])
    j = s.join(tz, on=s5_router.SITE_PK, how="left")
    assert j["tzid"].null_count() == 0
    assert (j["tzid"] == j["tz_group_id"]).all()
    sample = s.unique(s5_router.SITE_PK).head(300)
    law = site_ids(sample["merchant_id"].to_list(), sample["legal_country_iso"].to_list(), sample["site_order"].to_list())
    assert np.array_equal(sample["site_id"].to_numpy(), law)


def test_p_group_echoes_s4(world, routed):
    g = routed["rng_event_alias_pick_group"]
    j = g.join(world["s4_group_weights"].select("merchant_id", "utc_day", "tz_group_id", p4="p_group"),
               on=["merchant_id", "utc_day", "tz_group_id"], how="left")
    assert j["p4"].null_count() == 0 and (j["p4"] == j["p_group"]).all()


def reference_group_probabilities(world, merchant_id: int, utc_day: str) -> tuple[list[str], np.ndarray, list[int]]:
    """The local-time group law written out plainly for one merchant-day, independently of the
    engine's vectorised code: activity from zoneinfo quarter by quarter, then the proportional fit
    to the S4 mix. Returns (groups in tzid order, P (arrivals x groups), the arrivals' seqs)."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    roster = with_seq(world["s5_arrival_roster"]).filter(
        (pl.col("merchant_id") == merchant_id) & (pl.col("utc_day") == utc_day))
    mix = world["s4_group_weights"].filter((pl.col("merchant_id") == merchant_id) & (pl.col("utc_day") == utc_day)) \
        .sort("tz_group_id")
    cls = world["merchants"].filter(pl.col("merchant_id") == merchant_id)["merchant_class"][0]
    pol = load_policy("roster_policy_v1").data
    profile = next((c for c in pol["class_profiles"] if c["merchant_class"] == cls), pol["default_profile"])
    weights = np.asarray(profile["intraday_weights"], float)
    day0 = dt.datetime.fromisoformat(utc_day).replace(tzinfo=dt.timezone.utc)

    def activity(tzid):
        zone = ZoneInfo(tzid)
        w = np.array([weights[(day0 + dt.timedelta(minutes=15 * q)).astimezone(zone).hour] for q in range(96)])
        return w / w.sum()

    a = np.stack([activity(t) for t in mix["tz_group_id"]])  # (groups, 96)
    quarters = np.array([int(t[11:13]) * 4 + int(t[14:16]) // 15 for t in roster["utc_timestamp"]])
    p = mix["p_group"].to_numpy()
    aq = a[:, quarters].T  # (arrivals, groups)
    c = np.ones(p.size)
    for _ in range(10_000):
        prob = p * c * aq
        prob /= prob.sum(axis=1, keepdims=True)
        ratio = p / prob.mean(axis=0)
        if np.max(np.abs(ratio - 1)) < 1e-13:
            break
        c *= ratio
    return mix["tz_group_id"].to_list(), prob, roster["arrival_seq"].to_list()


def test_single_events_recompute_alone(world, routed):
    """Group picks follow the local-time law (a plain reference implementation over the arrival's
    merchant-day); site picks recompute from their counter and the scalar alias build of the table."""
    stream = Stream(CTX.draws_of, CTX.seed, STREAM_S5)
    g, s = routed["rng_event_alias_pick_group"], routed["rng_event_alias_pick_site"]
    s1 = world["s1_site_weights"].join(world["site_timezones"].select(s5_router.SITE_PK + ["tzid"]), on=s5_router.SITE_PK)
    for i in np.random.default_rng(3).choice(g.height, 25, replace=False):
        ev, sv = g.row(int(i), named=True), s.row(int(i), named=True)
        m, k = ev["merchant_id"], ev["arrival_seq"]
        groups, prob, seqs = reference_group_probabilities(world, m, ev["utc_day"])
        u1 = stream.uniforms(np.array([m], np.uint64), np.array([2 * k], np.uint64))[0]
        row = prob[seqs.index(k)]
        pick = int(np.searchsorted(np.cumsum(row), u1 * row.sum(), side="right"))
        assert groups[min(pick, len(groups) - 1)] == ev["tz_group_id"]
        grp = s1.filter((pl.col("merchant_id") == m) & (pl.col("tzid") == ev["tz_group_id"])).sort(s5_router.SITE_PK)
        q, a = alias.build(grp["p_weight"].to_numpy())
        u2 = stream.uniforms(np.array([m], np.uint64), np.array([2 * k + 1], np.uint64))
        row = grp.row(int(alias.sample(q, a, u2)[0]), named=True)
        assert (row["legal_country_iso"], row["site_order"]) == (sv["legal_country_iso"], sv["site_order"])


def _chi_square_by_class(cells: pl.DataFrame, block: list[str], classes: pl.DataFrame) -> dict:
    """p-value per merchant class of observed vs expected counts.

    Cells are grouped in blocks whose total is fixed (a merchant-day's arrivals for groups; the
    arrivals routed to a (merchant, group) for sites), so each block only has (cells - 1) degrees
    of freedom: `ddof` removes one per block. Inside a block, cells expected below 5 are pooled
    into one, so the chi-square approximation holds.
    """
    cells = cells.with_columns(pl.col("obs").fill_null(0)).join(classes, on="merchant_id")
    keys = ["merchant_class"] + block
    pooled = pl.concat([
        cells.filter(pl.col("exp") >= 5).select(*keys, "obs", "exp"),
        cells.filter(pl.col("exp") < 5).group_by(keys).agg(pl.col("obs").sum(), pl.col("exp").sum()),
    ]).filter(pl.col("exp") > 0)
    assert pooled["obs"].sum() == cells["obs"].sum()  # nothing observed outside the expected support
    out = {}
    for (cls,), part in pooled.group_by("merchant_class"):
        o, e = part["obs"].to_numpy().astype(float), part["exp"].to_numpy()
        out[cls] = chisquare(o, e * o.sum() / e.sum(), ddof=part.select(block).n_unique() - 1).pvalue
    return out


def test_frequencies_match_s4_times_s1(world, routed):
    roster, s4 = world["s5_arrival_roster"], world["s4_group_weights"]
    classes = world["merchants"].select("merchant_id", "merchant_class")
    day_group = ["merchant_id", "utc_day", "tz_group_id"]
    # groups: per merchant-day, expected n(m, d) x p_group(m, d, g) (day effects included)
    exp_g = (roster.group_by("merchant_id", "utc_day").agg(n=pl.len()).join(s4, on=["merchant_id", "utc_day"])
             .select(*day_group, exp=pl.col("n") * pl.col("p_group")))
    obs_g = routed["rng_event_alias_pick_group"].group_by(day_group).agg(obs=pl.len())
    p_groups = _chi_square_by_class(exp_g.join(obs_g, on=day_group, how="left"), ["merchant_id", "utc_day"], classes)

    # sites: given the arrivals routed to (m, g), expected count x p_weight / group mass
    s1 = world["s1_site_weights"].join(world["site_timezones"].select(s5_router.SITE_PK + ["tzid"]), on=s5_router.SITE_PK)
    s1 = s1.with_columns(share=pl.col("p_weight") / pl.col("p_weight").sum().over("merchant_id", "tzid"))
    routed_g = routed["rng_event_alias_pick_group"].group_by("merchant_id", tzid="tz_group_id").agg(n=pl.len())
    exp_s = s1.join(routed_g, on=["merchant_id", "tzid"]).select(*s5_router.SITE_PK, "tzid", exp=pl.col("n") * pl.col("share"))
    obs_s = routed["rng_event_alias_pick_site"].group_by(s5_router.SITE_PK).agg(obs=pl.len())
    p_sites = _chi_square_by_class(exp_s.join(obs_s, on=s5_router.SITE_PK, how="left"), ["merchant_id", "tzid"], classes)

    assert len(p_groups) == len(CLASSES) and len(p_sites) == len(CLASSES)
    assert min(p_groups.values()) > 0.001, p_groups
    assert min(p_sites.values()) > 0.001, p_sites


def test_day_mix_mode_is_the_alias_law_of_the_s4_mix(world):
    """The old law (group from the day's mix alone, whatever the hour), kept as T-S5-01's negative
    control: the group of any event recomputes from its counter and the alias build of the mix."""
    stream = Stream(CTX.draws_of, CTX.seed, STREAM_S5)
    g = route(world, group_choice="day_mix")["rng_event_alias_pick_group"]
    s4 = world["s4_group_weights"]
    for i in np.random.default_rng(4).choice(g.height, 25, replace=False):
        ev = g.row(int(i), named=True)
        m, k = ev["merchant_id"], ev["arrival_seq"]
        mix = s4.filter((pl.col("merchant_id") == m) & (pl.col("utc_day") == ev["utc_day"])).sort("tz_group_id")
        q, a = alias.build(mix["p_group"].to_numpy())
        u1 = stream.uniforms(np.array([m], np.uint64), np.array([2 * k], np.uint64))
        assert mix["tz_group_id"][int(alias.sample(q, a, u1)[0])] == ev["tz_group_id"]


def test_local_time_routing_keeps_far_sites_out_of_their_night(world, routed):
    """Against the old law on the same draws: fewer arrivals land at a group's local night."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    def night_share(events):
        ev = events.join(with_seq(world["s5_arrival_roster"]).select("merchant_id", "arrival_seq", "utc_timestamp"),
                         on=["merchant_id", "arrival_seq"]).sample(20_000, seed=1)
        hours = [dt.datetime.fromisoformat(t[:19] + "+00:00").astimezone(ZoneInfo(z)).hour
                 for t, z in zip(ev["utc_timestamp"], ev["tz_group_id"])]
        return float(np.mean(np.array(hours) < 6))

    local = night_share(routed["rng_event_alias_pick_group"])
    old = night_share(route(world, group_choice="day_mix")["rng_event_alias_pick_group"])
    assert local < old - 0.05, (local, old)


def test_chi_square_has_power(world, routed):
    """Negative control: the same recipe rejects base shares without the day effect."""
    roster, s4 = world["s5_arrival_roster"], world["s4_group_weights"]
    day_group = ["merchant_id", "utc_day", "tz_group_id"]
    wrong = (roster.group_by("merchant_id", "utc_day").agg(n=pl.len()).join(s4, on=["merchant_id", "utc_day"])
             .select(*day_group, exp=pl.col("n") * pl.col("base_share")))
    obs = routed["rng_event_alias_pick_group"].group_by(day_group).agg(obs=pl.len())
    p = _chi_square_by_class(wrong.join(obs, on=day_group, how="left"), ["merchant_id", "utc_day"],
                             world["merchants"].select("merchant_id", "merchant_class"))
    assert max(p.values()) < 1e-6, p


def test_deterministic_and_shard_invariant(world, routed):
    names = ("rng_event_alias_pick_group", "rng_event_alias_pick_site", "rng_trace_s5", "s5_selection_log")
    for shard in (1, 7, 10_000):
        again = route(world, selection_log=True, shard_merchants=shard)
        for name in names:
            assert again[name].equals(routed[name]), (shard, name)


def test_inner_block_size_is_invisible(world, routed, monkeypatch):
    monkeypatch.setattr(s5_router, "BLOCK", 997)  # a prime: blocks cut merchants at odd places
    again = route(world, selection_log=True, shard_merchants=13)
    for name in ("rng_event_alias_pick_group", "rng_event_alias_pick_site", "rng_trace_s5", "s5_selection_log"):
        assert again[name].equals(routed[name]), name


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shard=st.integers(min_value=1, max_value=40), seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_shard_invariance_property(small_world, shard, seed):
    ctx = dataclasses.replace(CTX, seed=seed)
    one = route(small_world, ctx=ctx, selection_log=True)
    many = route(small_world, ctx=ctx, selection_log=True, shard_merchants=shard)
    for name in ("rng_event_alias_pick_group", "rng_event_alias_pick_site", "rng_trace_s5", "s5_selection_log"):
        assert many[name].equals(one[name]), (shard, name)


def test_seed_changes_the_draws(world, routed):
    other = route(world, ctx=dataclasses.replace(CTX, seed=43))
    a, b = routed["rng_event_alias_pick_site"], other["rng_event_alias_pick_site"]
    assert not a["site_id"].equals(b["site_id"])
    assert a.select("merchant_id", "arrival_seq", "rng_counter_before_lo").equals(
        b.select("merchant_id", "arrival_seq", "rng_counter_before_lo"))


def test_trace_reconciles_with_events(routed):
    t = routed["rng_trace_s5"]
    assert t["substream_label"].to_list() == ["alias_pick_group", "alias_pick_site"]
    for row, name in zip(t.iter_rows(named=True), ("rng_event_alias_pick_group", "rng_event_alias_pick_site")):
        ev = routed[name]
        assert row["module"] == "2B.S5.router"
        assert row["events"] == ev.height == ev["draws"].sum() and row["blocks"] == ev["blocks"].sum()
        assert row["draws"] == ev["draws"].sum()
        first, last = ev.row(0, named=True), ev.row(-1, named=True)
        assert row["first_counter_hi"] == first["rng_counter_before_hi"]
        assert row["first_counter_lo"] == first["rng_counter_before_lo"]
        assert row["last_counter_hi"] == last["rng_counter_after_hi"]
        assert row["last_counter_lo"] == last["rng_counter_after_lo"]


def test_empty_roster(world):
    empty = {**world, "s5_arrival_roster": world["s5_arrival_roster"].head(0)}
    out = route(empty, selection_log=True)
    assert out["rng_event_alias_pick_group"].height == 0 and out["s5_selection_log"].height == 0
    assert out["rng_trace_s5"]["events"].to_list() == [0, 0]
    for name in ("rng_event_alias_pick_group", "rng_event_alias_pick_site", "rng_trace_s5"):
        contracts.conform(name, out[name])


# ---------------------------------------------------------------------------------------------
# bad inputs: each stops S5 with an error naming the merchant / day and the rule


def _first_arrival(world):
    return world["s5_arrival_roster"].row(0, named=True)


def _raises(world, rule_part, *named):
    with pytest.raises(EngineError) as exc:
        route(world)
    assert rule_part in exc.value.rule, exc.value
    for text in named:
        assert str(text) in str(exc.value), exc.value
    return exc.value


def test_missing_merchant_day_raises(world):
    a = _first_arrival(world)
    s4 = world["s4_group_weights"].filter((pl.col("merchant_id") != a["merchant_id"]) | (pl.col("utc_day") != a["utc_day"]))
    _raises({**world, "s4_group_weights": s4}, "no S4 group mix", a["merchant_id"], a["utc_day"])


def test_day_outside_s4_grid_raises(world):
    roster = world["s5_arrival_roster"]
    late = roster.tail(1).with_columns(utc_day=pl.lit("2027-06-30"), utc_timestamp=pl.lit("2027-06-30T00:00:00.000000Z"))
    _raises({**world, "s5_arrival_roster": pl.concat([roster, late])}, "no S4 group mix", "2027-06-30")


def test_merchant_day_not_summing_to_one_raises(world):
    s4 = world["s4_group_weights"]
    m, d = s4["merchant_id"][5], s4["utc_day"][5]
    s4 = s4.with_columns(p_group=pl.when((pl.col("merchant_id") == m) & (pl.col("utc_day") == d))
                         .then(pl.col("p_group") * 1.001).otherwise(pl.col("p_group")))
    _raises({**world, "s4_group_weights": s4}, "not 1 within", m, d)


def test_unknown_merchant_raises(world):
    roster = world["s5_arrival_roster"]
    stranger = roster.head(1).with_columns(merchant_id=pl.lit(12345, dtype=pl.UInt64))
    _raises({**world, "s5_arrival_roster": pl.concat([roster, stranger])}, "unknown to s1_site_weights", 12345)


def test_negative_p_group_raises(world):
    s4 = world["s4_group_weights"].with_columns(
        p_group=pl.when(pl.int_range(pl.len()) == 3).then(-0.5).otherwise(pl.col("p_group")))
    _raises({**world, "s4_group_weights": s4}, "finite and >= 0")


def test_group_without_sites_raises(world):
    s4 = world["s4_group_weights"]
    m = s4["merchant_id"][0]
    s4 = s4.with_columns(tz_group_id=pl.when(pl.col("merchant_id") == m).then(pl.lit("Antarctica/Troll"))
                         .otherwise(pl.col("tz_group_id")))
    # one group renamed per day, other groups keep their names; keep only one row per merchant-day key
    s4 = s4.unique(["merchant_id", "utc_day", "tz_group_id"], keep="first", maintain_order=True)
    s4 = s4.with_columns(p_group=pl.col("p_group") / pl.col("p_group").sum().over("merchant_id", "utc_day"))
    _raises({**world, "s4_group_weights": s4}, "no site with that tzid", m, "Antarctica/Troll")


def test_site_without_tzid_raises(world):
    tz = world["site_timezones"].slice(1)
    _raises({**world, "site_timezones": tz}, "no tzid")


def test_bad_day_format_raises(world):
    roster = world["s5_arrival_roster"].with_columns(
        utc_day=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("2026/01/01")).otherwise(pl.col("utc_day")))
    _raises({**world, "s5_arrival_roster": roster}, "YYYY-MM-DD", "2026/01/01")


def test_duplicate_s4_row_raises(world):
    s4 = world["s4_group_weights"]
    _raises({**world, "s4_group_weights": pl.concat([s4, s4.head(1)])}, "duplicate")


def test_policy_schema_rejects_unknown_keys(tmp_path):
    import json
    import shutil

    from engine.policies import DEFAULT_POLICY_DIR

    (tmp_path / "schemas").mkdir()
    shutil.copy(DEFAULT_POLICY_DIR / "schemas" / "route_rng_policy_v1.schema.json", tmp_path / "schemas")
    data = json.loads((DEFAULT_POLICY_DIR / "route_rng_policy_v1.json").read_text())
    (tmp_path / "route_rng_policy_v1.json").write_text(json.dumps({**data, "shards": 3}))
    with pytest.raises(EngineError, match="additionalProperties"):
        load_policy("route_rng_policy_v1", tmp_path)
    (tmp_path / "route_rng_policy_v1.json").write_text(json.dumps({**data, "shard_merchants": 0}))
    with pytest.raises(EngineError, match="minimum"):
        load_policy("route_rng_policy_v1", tmp_path)
