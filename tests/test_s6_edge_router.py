"""S6 virtual edge router: one event per virtual arrival and none otherwise, the counter law,
edge frequencies matching the policy weights, overrides, trace reconciliation, bad inputs."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import numpy as np
import polars as pl
import pytest
from scipy.stats import chisquare

from engine import alias, contracts
from engine.errors import EngineError
from engine.policies import DEFAULT_POLICY_DIR, load_policy
from engine.rng import STREAM_S6, Stream
from engine.states import s6_edge_router
from tests.helpers import context

CTX = context()
DAY0 = np.datetime64("2026-01-01", "D").astype(np.int64)


def synth(n_merchants=300, n_arrivals=60_000, virtual_share=0.4, seed=11):
    """Merchants (some virtual) and a time-sorted roster whose is_virtual is the merchant's flag."""
    rng = np.random.default_rng(seed)
    mids = np.unique(rng.integers(0, np.iinfo(np.uint64).max, size=n_merchants, dtype=np.uint64, endpoint=True))
    n = mids.size
    virtual = rng.random(n) < virtual_share
    merchants = pl.DataFrame({
        "merchant_id": mids, "home_country_iso": ["US"] * n, "mcc": np.full(n, 5999, dtype=np.int32),
        "merchant_class": np.where(virtual, "digital", "grocery"),
        "channel": np.where(virtual, "card_not_present", "card_present"), "is_virtual": virtual,
    })
    pick = rng.integers(0, n, n_arrivals)
    micros = rng.integers(0, 28 * 86_400_000_000, n_arrivals) + DAY0 * 86_400_000_000
    roster = (pl.DataFrame({"merchant_id": mids[pick], "t": micros})
              .join(merchants.select("merchant_id", "is_virtual", "merchant_class", "channel"), on="merchant_id",
                    how="left", maintain_order="left")
              .with_columns(ts=pl.from_epoch("t", time_unit="us")).sort("t", "merchant_id")
              .select("merchant_id", utc_timestamp=pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ"),
                      utc_day=pl.col("ts").dt.to_string("%Y-%m-%d"), is_virtual="is_virtual",
                      merchant_class="merchant_class", channel="channel"))
    return {"merchants": merchants, "s5_arrival_roster": roster}


def policy(**over):
    p = load_policy("virtual_edge_policy_v1")
    return {"virtual_edge_policy_v1": dataclasses.replace(p, data={**copy.deepcopy(p.data), **over})}


def route(world, ctx=CTX, **over):
    out = s6_edge_router.run({k: world[k] for k in s6_edge_router.READS}, policy(**over), ctx)
    out.pop("_report", None)
    return out


@pytest.fixture(scope="module")
def world():
    return synth()


@pytest.fixture(scope="module")
def routed(world):
    return route(world, edge_log=True)


def default_edges() -> pl.DataFrame:
    return pl.DataFrame(load_policy("virtual_edge_policy_v1").data["default_edges"])


# ---------------------------------------------------------------------------------------------


def test_default_catalogue_is_realistic():
    edges = default_edges()
    assert 20 <= edges.height <= 30
    assert edges["edge_id"].is_unique().all()
    assert {"edge-fra-01", "edge-ams-01", "edge-lhr-01", "edge-iad-01", "edge-sin-01", "edge-nrt-01"} <= set(edges["edge_id"])
    fra = edges.filter(pl.col("edge_id") == "edge-fra-01").row(0, named=True)
    assert fra["ip_country"] == "DE" and abs(fra["edge_lat"] - 50.11) < 0.1 and abs(fra["edge_lon"] - 8.68) < 0.1
    assert edges["ip_country"].n_unique() >= 15
    assert load_policy("virtual_edge_policy_v1").data["merchant_overrides"] == []


def test_outputs_conform_to_contracts(routed):
    for name in ("rng_event_cdn_edge_pick", "rng_trace_s6", "s6_edge_log"):
        contracts.conform(name, routed[name])
        contracts.check_key_order(name, routed[name])


def test_edge_log_is_off_by_default(world):
    assert "s6_edge_log" not in route(world)


def test_one_event_per_virtual_arrival_with_law_counters(world, routed):
    ev = routed["rng_event_cdn_edge_pick"]
    virtual = (world["s5_arrival_roster"].filter(pl.col("is_virtual"))
               .with_columns(virtual_seq=pl.int_range(pl.len(), dtype=pl.UInt64).over("merchant_id")))
    assert 0 < ev.height == virtual.height < world["s5_arrival_roster"].height
    want = virtual.select("merchant_id", "virtual_seq", "utc_day").sort("merchant_id", "virtual_seq")
    assert ev.select("merchant_id", "virtual_seq", "utc_day").equals(want)
    assert (ev["module"] == "2B.S6.edge_router").all() and (ev["substream_label"] == "cdn_edge_pick").all()
    assert (ev["rng_counter_before_hi"] == ev["merchant_id"]).all() and (ev["rng_counter_after_hi"] == ev["merchant_id"]).all()
    assert (ev["rng_counter_before_lo"] == ev["virtual_seq"]).all()
    assert (ev["rng_counter_after_lo"] == ev["virtual_seq"] + 1).all()
    assert (ev["draws"] == 1).all() and (ev["blocks"] == 1).all()
    assert ev.select("rng_counter_before_hi", "rng_counter_before_lo").n_unique() == ev.height
    log = routed["s6_edge_log"]
    ts = virtual.select("merchant_id", "virtual_seq", "utc_timestamp")
    assert log.select("merchant_id", "virtual_seq", "utc_timestamp").equals(ts.sort("merchant_id", "virtual_seq"))


def test_edge_attributes_come_from_the_catalogue(routed):
    ev = routed["rng_event_cdn_edge_pick"]
    j = ev.join(default_edges(), on="edge_id", how="left", suffix="_cat")
    for f in ("ip_country", "edge_lat", "edge_lon"):
        assert (j[f] == j[f + "_cat"]).all()


def _edge_p(counts: pl.DataFrame, edges: pl.DataFrame) -> float:
    j = edges.join(counts, on="edge_id", how="left").with_columns(pl.col("n").fill_null(0))
    assert j["n"].sum() == counts["n"].sum()  # no edge outside the list
    o = j["n"].to_numpy().astype(float)
    return chisquare(o, j["weight"].to_numpy() / j["weight"].sum() * o.sum()).pvalue


def test_edge_frequencies_match_policy_weights(routed):
    counts = routed["rng_event_cdn_edge_pick"].group_by("edge_id").agg(n=pl.len())
    assert counts.height == default_edges().height  # every edge used
    assert _edge_p(counts, default_edges()) > 0.001
    # negative control: the same recipe rejects uniform weights
    assert _edge_p(counts, default_edges().with_columns(weight=pl.lit(1.0))) < 1e-6


def test_merchant_override_and_unknown_owner(world):
    m = world["s5_arrival_roster"].filter(pl.col("is_virtual"))["merchant_id"].value_counts(sort=True)["merchant_id"][0]
    own = [{"edge_id": "edge-zz-02", "city": "B", "ip_country": "ZZ", "edge_lat": 1.0, "edge_lon": 2.0, "weight": 3.0},
           {"edge_id": "edge-zz-01", "city": "A", "ip_country": "ZZ", "edge_lat": -1.0, "edge_lon": -2.0, "weight": 1.0}]
    overrides = [{"merchant_id": int(m), "edges": own}, {"merchant_id": 7, "edges": []}]  # 7 is not in this world
    out = route(world, merchant_overrides=overrides)["rng_event_cdn_edge_pick"]
    base = route(world)["rng_event_cdn_edge_pick"]
    mine = out.filter(pl.col("merchant_id") == m)
    assert set(mine["edge_id"]) == {"edge-zz-01", "edge-zz-02"} and (mine["ip_country"] == "ZZ").all()
    counts = mine.group_by("edge_id").agg(n=pl.len())
    assert _edge_p(counts, pl.DataFrame(own)) > 0.001
    # sorted by edge_id: zz-01 (weight 1) is entry 0; recompute one event alone
    first = mine.row(0, named=True)
    q, a = alias.build([1.0, 3.0])
    u = Stream(CTX.draws_of, CTX.seed, STREAM_S6).uniforms(np.array([m], np.uint64), np.array([first["virtual_seq"]], np.uint64))
    assert ["edge-zz-01", "edge-zz-02"][int(alias.sample(q, a, u)[0])] == first["edge_id"]
    # other merchants are untouched by someone else's override
    assert out.filter(pl.col("merchant_id") != m).equals(base.filter(pl.col("merchant_id") != m))


def test_single_events_recompute_alone(routed):
    edges = default_edges().sort("edge_id")
    q, a = alias.build(edges["weight"].to_numpy())
    ev = routed["rng_event_cdn_edge_pick"].sample(30, seed=5)
    u = Stream(CTX.draws_of, CTX.seed, STREAM_S6).uniforms(ev["merchant_id"].to_numpy(), ev["virtual_seq"].to_numpy())
    assert edges["edge_id"].gather(alias.sample(q, a, u)).equals(ev["edge_id"], check_names=False)


def test_deterministic_and_blind_to_non_virtual_arrivals(world, routed):
    again = route(world, edge_log=True)
    for name in ("rng_event_cdn_edge_pick", "rng_trace_s6", "s6_edge_log"):
        assert again[name].equals(routed[name])
    only_virtual = {**world, "s5_arrival_roster": world["s5_arrival_roster"].filter(pl.col("is_virtual"))}
    assert route(only_virtual)["rng_event_cdn_edge_pick"].equals(routed["rng_event_cdn_edge_pick"])
    other = route(world, ctx=dataclasses.replace(CTX, seed=43))["rng_event_cdn_edge_pick"]
    assert not other["edge_id"].equals(routed["rng_event_cdn_edge_pick"]["edge_id"])


def test_trace_reconciles_with_events(routed):
    t, ev = routed["rng_trace_s6"], routed["rng_event_cdn_edge_pick"]
    assert t.height == 1
    row = t.row(0, named=True)
    assert (row["module"], row["substream_label"]) == ("2B.S6.edge_router", "cdn_edge_pick")
    assert row["events"] == ev.height and row["draws"] == ev["draws"].sum() and row["blocks"] == ev["blocks"].sum()
    first, last = ev.row(0, named=True), ev.row(-1, named=True)
    assert (row["first_counter_hi"], row["first_counter_lo"]) == (first["rng_counter_before_hi"], first["rng_counter_before_lo"])
    assert (row["last_counter_hi"], row["last_counter_lo"]) == (last["rng_counter_after_hi"], last["rng_counter_after_lo"])


def test_no_virtual_arrivals(world):
    plain = {**world, "s5_arrival_roster": world["s5_arrival_roster"].filter(~pl.col("is_virtual"))}
    out = route(plain, edge_log=True, default_edges=[])  # an empty default is fine when nobody needs it
    assert out["rng_event_cdn_edge_pick"].height == 0 and out["s6_edge_log"].height == 0
    assert out["rng_trace_s6"]["events"].to_list() == [0]
    for name in ("rng_event_cdn_edge_pick", "rng_trace_s6", "s6_edge_log"):
        contracts.conform(name, out[name])


# ---------------------------------------------------------------------------------------------
# bad inputs


def _virtual_merchant(world) -> int:
    return int(world["s5_arrival_roster"].filter(pl.col("is_virtual"))["merchant_id"][0])


def test_empty_default_list_raises(world):
    with pytest.raises(EngineError, match="edge list \\(default_edges\\) is empty") as exc:
        route(world, default_edges=[])
    assert "merchant_id=" in str(exc.value)


def test_empty_override_list_raises(world):
    m = _virtual_merchant(world)
    with pytest.raises(EngineError, match="edge list \\(merchant_overrides\\) is empty") as exc:
        route(world, merchant_overrides=[{"merchant_id": m, "edges": []}])
    assert str(m) in str(exc.value)


def test_virtual_flag_disagreeing_with_merchant_raises(world):
    roster = world["s5_arrival_roster"]
    flipped = roster.with_columns(is_virtual=pl.when(pl.int_range(pl.len()) == 0).then(~pl.col("is_virtual"))
                                  .otherwise(pl.col("is_virtual")))
    with pytest.raises(EngineError, match="merchant's is_virtual") as exc:
        route({**world, "s5_arrival_roster": flipped})
    assert str(roster["merchant_id"][0]) in str(exc.value)


def test_unknown_merchant_raises(world):
    roster = world["s5_arrival_roster"]
    stranger = roster.head(1).with_columns(merchant_id=pl.lit(99, dtype=pl.UInt64))
    with pytest.raises(EngineError, match="unknown to merchants"):
        route({**world, "s5_arrival_roster": pl.concat([roster, stranger])})


def test_duplicate_edge_and_override_raise(world):
    edges = load_policy("virtual_edge_policy_v1").data["default_edges"]
    with pytest.raises(EngineError, match="duplicate edge_id"):
        route(world, default_edges=edges + edges[:1])
    m = _virtual_merchant(world)
    with pytest.raises(EngineError, match="more than one override"):
        route(world, merchant_overrides=[{"merchant_id": m, "edges": edges[:2]}, {"merchant_id": m, "edges": edges[:3]}])


def test_policy_schema_rejects_bad_edges(tmp_path):
    (tmp_path / "schemas").mkdir()
    shutil.copy(DEFAULT_POLICY_DIR / "schemas" / "virtual_edge_policy_v1.schema.json", tmp_path / "schemas")
    data = json.loads((DEFAULT_POLICY_DIR / "virtual_edge_policy_v1.json").read_text())
    target = tmp_path / "virtual_edge_policy_v1.json"
    for bad, rule in ((dict(weight=0), "exclusiveMinimum"), (dict(edge_lat=91.0), "maximum"),
                      (dict(ip_country="Germany"), "pattern"), (dict(pop="x"), "additionalProperties")):
        doc = copy.deepcopy(data)
        doc["default_edges"][0].update(bad)
        target.write_text(json.dumps(doc))
        with pytest.raises(EngineError, match=rule):
            load_policy("virtual_edge_policy_v1", tmp_path)
