"""The realism-grade arrival roster: determinism, shard invariance, PRE-01..03, the law's shape,
and the validation of user-supplied rosters (engine/roster/, docs/world.md and docs/certification.md)."""

from __future__ import annotations

import copy
import math
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import contracts, rng
from engine import roster as R
from engine.errors import EngineError
from engine.policies import load_policy
from engine.roster import clock as RC
from engine.roster import volume as RV

MF = "5e" * 32
SEED = 42
GRID = ("2026-01-01", "2026-03-31")

# Real zones with DST changes inside the grid (US 2026-03-08, EU 2026-03-29), half- and
# quarter-hour offsets and both ends of the offset range.
ZONES = [
    ("US", "America/New_York"), ("US", "America/Los_Angeles"), ("GB", "Europe/London"),
    ("DE", "Europe/Berlin"), ("IN", "Asia/Kolkata"), ("NP", "Asia/Kathmandu"),
    ("AU", "Australia/Sydney"), ("CA", "America/St_Johns"), ("NZ", "Pacific/Auckland"),
    ("KI", "Pacific/Kiritimati"), ("AS", "Pacific/Pago_Pago"), ("JP", "Asia/Tokyo"),
]
CLASSES = ["grocery", "restaurants", "fuel", "apparel", "electronics", "pharmacy",
           "lodging", "travel", "transport", "digital"]
CHANNELS = ["card_present", "card_not_present", "omni"]


def synthetic_world(n: int, seed: int = 0, zones=ZONES) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Merchants and site time zones shaped like the world module's output (test data only)."""
    rng = np.random.default_rng(seed)
    # ids over the whole u64 range: the RNG counter's high word and the contract type are u64
    mid = np.unique(rng.integers(1, np.iinfo(np.uint64).max, n, dtype=np.uint64))
    assert mid.size == n
    n_sites = np.maximum(2, np.round(np.exp(rng.normal(np.log(16), 0.75, n)))).astype(np.int64)
    home = rng.integers(0, len(zones), n)
    cls = np.array(CLASSES)[np.arange(n) % len(CLASSES)]  # every class present
    virtual = (cls == "digital") | (rng.random(n) < 0.03)
    channel = np.where(virtual, "card_not_present", np.array(CHANNELS)[np.arange(n) % 3])
    merchants = pl.DataFrame({
        "merchant_id": pl.Series(mid, dtype=pl.UInt64),
        "home_country_iso": [zones[h][0] for h in home],
        "mcc": pl.Series(rng.integers(4000, 6000, n), dtype=pl.Int32),
        "merchant_class": cls, "channel": channel, "is_virtual": virtual,
    })
    owner = np.repeat(np.arange(n), n_sites)
    foreign = rng.random(owner.size) < 0.2
    zone = np.where(foreign, rng.integers(0, len(zones), owner.size), home[owner])
    order = np.concatenate([np.arange(1, k + 1) for k in n_sites])
    sites = pl.DataFrame({
        "merchant_id": pl.Series(mid[owner], dtype=pl.UInt64),
        "legal_country_iso": [zones[z][0] for z in zone],
        "site_order": pl.Series(order, dtype=pl.Int32),
        "tzid": [zones[z][1] for z in zone],
        "tzid_source": "synthetic",
    })
    return merchants, sites


@pytest.fixture(scope="module")
def policy() -> dict:
    return load_policy("roster_policy_v1").data


@pytest.fixture(scope="module")
def world():
    return synthetic_world(100)


@pytest.fixture(scope="module")
def built(world, policy):
    return R.build_roster(*world, policy, GRID, MF, SEED)


def variant(policy: dict, **changes) -> dict:
    out = copy.deepcopy(policy)
    out.update(changes)
    return out


def per_merchant_day(roster: pl.DataFrame) -> pl.DataFrame:
    return roster.group_by("merchant_id", "utc_day").len()


# --- determinism and shard invariance ---------------------------------------------------------

def test_same_inputs_give_identical_roster_and_card(world, policy, built):
    again = R.build_roster(*world, policy, GRID, MF, SEED)
    assert again[0].equals(built[0])
    assert again[1] == built[1]


def test_another_seed_gives_another_roster(world, policy, built):
    other, _ = R.build_roster(*world, policy, GRID, MF, SEED + 1)
    assert not other.equals(built[0])


def test_halves_built_separately_merge_into_the_whole(world, policy, built):
    merchants, sites = world
    odd = (pl.int_range(pl.len()) % 2 == 1)
    parts = []
    for half in (merchants.filter(odd), merchants.filter(~odd)):
        part_sites = sites.join(half.select("merchant_id"), on="merchant_id", how="semi")
        parts.append(R.build_roster(half, part_sites, policy, GRID, MF, SEED)[0])
    merged = pl.concat(parts).sort("utc_timestamp", "merchant_id")
    assert merged.equals(built[0])


# --- preconditions PRE-01..03 on a synthetic world --------------------------------------------

def test_pre01_horizon_is_the_whole_day_grid(built):
    days = built[0]["utc_day"].str.to_date()
    span = (days.max() - days.min()).days + 1
    assert span == 90 >= 28
    assert built[1]["horizon"]["days"] == 90


def test_pre02_repeated_arrivals_per_active_merchant_day(built):
    n = per_merchant_day(built[0])["len"]
    assert n.median() >= 2
    assert (n >= 2).mean() >= 0.9


def test_pre03_every_merchant_class_and_channel_has_arrivals(world, built):
    merchants, _ = world
    roster = built[0]
    assert set(roster["merchant_id"]) == set(merchants["merchant_id"])
    assert set(roster["merchant_class"]) == set(merchants["merchant_class"])
    assert set(roster["channel"]) == set(merchants["channel"])


def test_card_reports_the_preconditions_facts(built):
    card = built[1]
    assert card["horizon"]["days"] == 90
    assert card["arrivals_per_merchant_day"]["p50"] >= 2
    assert card["share_active_merchant_days_ge2"] >= 0.9
    assert card["merchants_with_arrivals"] == card["merchants"] == 100
    assert card["merchant_classes_without_arrivals"] == card["channels_without_arrivals"] == []


def test_built_card_equals_the_card_measured_on_the_roster_frame(world, built):
    measured = R.roster_card(built[0], world[0], GRID)
    assert measured == {k: built[1][k] for k in measured}


def test_every_merchant_keeps_min_active_days_even_when_days_drop_often(world, policy):
    roster, card = R.build_roster(*world, variant(policy, inactive_day_prob=0.9), GRID, MF, SEED)
    active = roster.group_by("merchant_id").agg(pl.col("utc_day").n_unique())["utc_day"]
    assert active.min() == policy["min_active_days"] == card["active_days_per_merchant_min"]


def test_default_scale_is_about_ten_arrivals_per_merchant_day(built):
    card = built[1]
    assert 7 <= card["arrivals_per_merchant_day"]["mean"] <= 13
    assert card["arrivals_total"] == built[0].height


def test_built_roster_meets_the_contract_schema_and_key_order(built):
    table = contracts.conform("s5_arrival_roster", built[0])
    assert table.schema.equals(contracts.get("s5_arrival_roster").schema)
    contracts.check_key_order("s5_arrival_roster", built[0])


# --- timestamps --------------------------------------------------------------------------------

def test_timestamps_are_unique_per_merchant(built):
    assert not built[0].select("merchant_id", "utc_timestamp").is_duplicated().any()


def test_rows_are_sorted_by_timestamp_then_merchant(built):
    roster = built[0]
    assert roster.select("utc_timestamp", "merchant_id").equals(
        roster.select("utc_timestamp", "merchant_id").sort("utc_timestamp", "merchant_id"))


def test_timestamps_are_rfc3339_micros_inside_their_utc_day(built):
    roster = built[0]
    parsed = roster["utc_timestamp"].str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%S%.6fZ")
    assert parsed.null_count() == 0
    assert (parsed.dt.date() == roster["utc_day"].str.to_date()).all()
    # the hand-written formatter writes exactly what polars' strftime writes
    assert (parsed.dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ") == roster["utc_timestamp"]).all()


def test_formatter_handles_the_edges_of_a_day():
    days = np.array([20454, 20455], dtype=np.int64)  # 2026-01-01, 2026-01-02
    ts = np.array([20454 * R.DAY_US, 20455 * R.DAY_US - 1, 20455 * R.DAY_US + 3_723_000_004], dtype=np.int64)
    assert R._format_timestamps(ts, days).to_list() == [
        "2026-01-01T00:00:00.000000Z", "2026-01-01T23:59:59.999999Z", "2026-01-02T01:02:03.000004Z"]


def test_collisions_are_bumped_one_microsecond_and_stay_inside_the_day():
    last = R.DAY_US - 1
    tod = np.array([5, 5, 5, last, last, 7], dtype=np.int64)
    counts = np.array([3, 2, 1])
    group, rank = R._groups_and_ranks(counts)
    out, changed = R._unique_times(tod, group, rank, counts)
    assert out.tolist() == [5, 6, 7, last - 1, last, 7]
    assert changed == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, R.DAY_US - 1), min_size=1, max_size=40), min_size=1, max_size=8))
def test_bumped_times_strictly_increase_inside_each_day(days):
    counts = np.array([len(d) for d in days])
    tod = np.array([t for d in days for t in d], dtype=np.int64)
    group, rank = R._groups_and_ranks(counts)
    out, _ = R._unique_times(tod, group, rank, counts)
    for g in range(len(days)):
        mine = out[group == g]
        assert (np.diff(mine) > 0).all() and mine[0] >= 0 and mine[-1] < R.DAY_US


# --- the law's shape ---------------------------------------------------------------------------

def one_zone_world(n: int, country: str, tzid: str, seed: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
    return synthetic_world(n, seed, zones=[(country, tzid)])


def test_weekday_effect_follows_the_local_weekday(policy):
    # Only local Saturday is busy. In Auckland (UTC+13 in summer) local Saturday covers most of
    # the UTC Friday; in Los Angeles (UTC-8) it is the UTC Saturday.
    saturday = [1.0, 1.0, 1.0, 1.0, 1.0, 4.0, 1.0]
    pol = variant(policy, class_profiles=[], inactive_day_prob=0.0)
    pol["default_profile"] = {**policy["default_profile"], "weekday_multipliers": saturday}
    busiest = {}
    for country, tzid in (("NZ", "Pacific/Auckland"), ("US", "America/Los_Angeles")):
        roster, _ = R.build_roster(*one_zone_world(40, country, tzid), pol, GRID, MF, SEED)
        by_weekday = (per_merchant_day(roster).with_columns(wd=pl.col("utc_day").str.to_date().dt.weekday())
                      .group_by("wd").agg(pl.col("len").mean()).sort("len"))
        busiest[tzid] = by_weekday["wd"][-1]
        assert by_weekday["len"][-1] > 2.0 * by_weekday["len"][-2]
    assert busiest == {"Pacific/Auckland": 5, "America/Los_Angeles": 6}  # ISO: Friday 5, Saturday 6


def test_intraday_profile_is_read_in_the_home_time_zone(policy):
    # All weight on local 12:00-13:00. Kolkata is UTC+5:30: 06:30-07:30 UTC. New York is UTC-5,
    # then UTC-4 from 2026-03-08: 17:00-18:00 UTC before, 16:00-17:00 after.
    noon = [0.0] * 24
    noon[12] = 1.0
    pol = variant(policy, class_profiles=[])
    pol["default_profile"] = {**policy["default_profile"], "intraday_weights": noon}
    kolkata, _ = R.build_roster(*one_zone_world(20, "IN", "Asia/Kolkata"), pol, GRID, MF, SEED)
    minute = kolkata["utc_timestamp"].str.slice(11, 5)
    assert minute.min() >= "06:30" and minute.max() < "07:30"

    new_york, _ = R.build_roster(*one_zone_world(20, "US", "America/New_York"), pol, GRID, MF, SEED)
    local_hour = {
        (t.astimezone(ZoneInfo("America/New_York"))).hour
        for t in new_york["utc_timestamp"].str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%S%.6fZ").to_list()
    }
    assert local_hour == {12}


def test_larger_merchants_get_more_arrivals(world, policy, built):
    _, sites = world
    size = sites.group_by("merchant_id").len().rename({"len": "sites"})
    volume = built[0].group_by("merchant_id").len().join(size, on="merchant_id")
    assert volume.select(pl.corr("len", "sites", method="spearman")).item() > 0.2


def test_offset_patterns_rebuild_every_tz_day_row():
    flat = np.full((5, R.QUARTERS), 3600, dtype=np.int64)
    flat[1] = -18000
    flat[2, :28] = -18000  # a DST day: the offset changes at 07:00 UTC
    flat[2, 28:] = -14400
    flat[4] = flat[2]
    patterns, pattern_of = RC._offset_patterns(flat)
    assert len(patterns) == 3
    assert (patterns[pattern_of] == flat).all()


def test_poisson_inverse_cdf_reproduces_the_pmf():
    lam, n = 7.5, 200_000
    u = (np.arange(n) + 0.5) / n  # an exact grid of quantiles
    k = rng.inverse_cdf_counts(np.full(n, lam), u, 200)
    pmf = [math.exp(-lam) * lam**i / math.factorial(i) for i in range(30)]
    observed = np.bincount(k, minlength=30)[:30] / n
    assert np.abs(observed - pmf).max() < 2.0 / n


def test_unknown_class_uses_the_default_profile_and_is_reported(world, policy):
    merchants, sites = world
    renamed = merchants.with_columns(pl.col("merchant_class").replace({"fuel": "gaming"}))
    _, card = R.build_roster(renamed, sites, policy, GRID, MF, SEED)
    assert card["classes_on_default_profile"] == ["gaming"]


def test_home_time_zone_is_the_most_frequent_home_country_tzid():
    merchants = pl.DataFrame({
        "merchant_id": pl.Series([1, 2], dtype=pl.UInt64), "home_country_iso": ["US", "FR"],
        "merchant_class": "grocery", "channel": "omni", "is_virtual": False,
    })
    rows = [  # 1: home tie Chicago/New_York -> smaller name; 2: no site at home -> most frequent
        (1, "US", "America/New_York"), (1, "US", "America/Chicago"),
        (1, "GB", "Europe/London"), (1, "GB", "Europe/London"), (1, "GB", "Europe/London"),
        (2, "DE", "Europe/Berlin"), (2, "GB", "Europe/London"), (2, "GB", "Europe/London"),
    ]
    sites = pl.DataFrame(rows, schema={"merchant_id": pl.UInt64, "legal_country_iso": pl.String, "tzid": pl.String},
                         orient="row")
    table = RV._merchant_table(merchants, sites)
    assert table["home_tzid"].to_list() == ["America/Chicago", "Europe/London"]
    assert table["n_sites"].to_list() == [5, 3]


# --- horizon -----------------------------------------------------------------------------------

def test_one_day_horizon_policy_gives_a_one_day_roster(world, policy):
    # the harness's PRE-01 negative control: only the horizon changes, min_active_days stays 28
    pol = variant(policy, horizon={"start": "2026-02-01", "end": "2026-02-01"})
    roster, card = R.build_roster(*world, pol, GRID, MF, SEED)
    assert roster["utc_day"].unique().to_list() == ["2026-02-01"]
    assert card["horizon"]["days"] == 1 and card["min_active_days_applied"] == 1
    assert roster["merchant_id"].n_unique() == world[0].height


def test_explicit_horizon_outside_the_day_grid_is_refused(world, policy):
    pol = variant(policy, horizon={"start": "2025-12-31", "end": "2026-01-30"})
    with pytest.raises(EngineError, match="leaves the day grid"):
        R.build_roster(*world, pol, GRID, MF, SEED)


def test_explicit_horizon_form_is_accepted_by_the_schema(tmp_path, policy):
    import json
    pol = variant(policy, horizon={"start": "2026-01-05", "end": "2026-01-05"})
    (tmp_path / "roster_policy_v1.json").write_text(json.dumps(pol))
    assert load_policy("roster_policy_v1", tmp_path).data["horizon"] == {"start": "2026-01-05", "end": "2026-01-05"}


# --- inputs ------------------------------------------------------------------------------------

def test_a_merchant_without_sites_is_refused(world, policy):
    merchants, sites = world
    first = merchants["merchant_id"][0]
    with pytest.raises(EngineError, match="no sites") as exc:
        R.build_roster(merchants, sites.filter(pl.col("merchant_id") != first), policy, GRID, MF, SEED)
    assert str(first) in exc.value.field


def test_sites_of_an_unknown_merchant_are_refused(world, policy):
    merchants, sites = world
    with pytest.raises(EngineError, match="not in the merchants table"):
        R.build_roster(merchants.slice(1), sites, policy, GRID, MF, SEED)


def test_shipped_policy_matches_its_schema_and_the_schema_is_closed(tmp_path, policy):
    import json
    (tmp_path / "roster_policy_v1.json").write_text(json.dumps({**policy, "surprise": 1}))
    with pytest.raises(EngineError, match="additionalProperties"):
        load_policy("roster_policy_v1", tmp_path)


# --- user rosters ------------------------------------------------------------------------------

def small_roster(built) -> pl.DataFrame:
    return built[0].head(200)


def test_a_valid_user_roster_loads_unchanged(tmp_path, world, built):
    path = tmp_path / "roster.parquet"
    built[0].write_parquet(path)
    assert R.load_user_roster(path, world[0], GRID).equals(built[0])


def test_a_user_roster_with_signed_merchant_ids_is_conformed_to_u64(tmp_path, world, built):
    path = tmp_path / "roster.parquet"
    fits = small_roster(built).filter(pl.col("merchant_id") < 2**63)  # ids an i64 column can hold
    fits.with_columns(pl.col("merchant_id").cast(pl.Int64)).write_parquet(path)
    loaded = R.load_user_roster(path, world[0], GRID)
    assert loaded.schema["merchant_id"] == pl.UInt64
    assert loaded.equals(fits)


def test_without_merchants_a_user_roster_gets_the_file_level_rules_only(tmp_path, built):
    path = tmp_path / "roster.parquet"
    small_roster(built).write_parquet(path)
    assert R.load_user_roster(path).equals(small_roster(built))  # grid and merchants checked later
    _swap(small_roster(built), 3, 4).write_parquet(path)
    with pytest.raises(EngineError, match="not sorted"):
        R.load_user_roster(path)


def _swap(df: pl.DataFrame, i: int, j: int) -> pl.DataFrame:
    idx = list(range(df.height))
    idx[i], idx[j] = idx[j], idx[i]
    return df[idx]


BAD_ROSTERS = {
    "missing column": (lambda df: df.drop("channel"), "missing column"),
    "timestamp format": (
        lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.col("utc_timestamp").str.slice(0, 19) + "Z")
                                   .otherwise(pl.col("utc_timestamp")).alias("utc_timestamp")),
        "6 fractional digits"),
    "utc_day inconsistent": (
        lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("2026-01-02"))
                                   .otherwise(pl.col("utc_day")).alias("utc_day")),
        "differs from the date of utc_timestamp"),
    "outside the day grid": (
        lambda df: df.with_columns(pl.col("utc_timestamp").str.replace("^2026-01-01", "2025-12-31"),
                                   pl.col("utc_day").str.replace("^2026-01-01", "2025-12-31")),
        "outside the day grid"),
    "unknown merchant": (
        lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit(7, pl.UInt64))
                                   .otherwise(pl.col("merchant_id")).alias("merchant_id")),
        "not in the merchants table"),
    "merchant facts": (
        lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(~pl.col("is_virtual"))
                                   .otherwise(pl.col("is_virtual")).alias("is_virtual")),
        "differ from the merchants table"),
    "unsorted": (lambda df: _swap(df, 3, 4), "not sorted"),
    "duplicate": (lambda df: pl.concat([df.head(4), df.slice(3)]), "duplicate (merchant_id, utc_timestamp)"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROSTERS))
def test_a_bad_user_roster_is_refused_naming_file_row_and_rule(tmp_path, world, built, case):
    spoil, rule = BAD_ROSTERS[case]
    path = tmp_path / "roster.parquet"
    spoil(small_roster(built)).write_parquet(path)
    with pytest.raises(EngineError) as exc:
        R.load_user_roster(path, world[0], GRID)
    assert exc.value.where == str(path)
    assert rule in exc.value.rule
    if case != "missing column":
        assert exc.value.field.startswith("row ")


def test_a_file_that_is_not_parquet_is_refused(tmp_path, world):
    path = tmp_path / "roster.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(EngineError, match="not a readable Parquet file"):
        R.load_user_roster(path, world[0], GRID)


# --- scale -------------------------------------------------------------------------------------

def test_default_scale_is_about_a_million_arrivals(policy):
    """docs/world.md's default scale (timing lives in benchmarks/, not here)."""
    world = synthetic_world(1238, seed=7)
    roster, _ = R.build_roster(*world, policy, GRID, MF, SEED)
    assert 800_000 <= roster.height <= 1_200_000
