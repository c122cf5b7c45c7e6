"""S7 audit: every check passes on a consistent world, and each kind of corruption fails the check
that owns it (and is written as a FAIL report, never raised)."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from engine.bundle import verify_bundle
from engine.errors import EngineError
from engine.identity import canonical_json, sha256_hex, site_ids
from engine.policies import load_policy
from engine.states import s2_alias_tables, s7_audit, s8_bundle
from engine.states.s7_audit import registry
from tests.helpers import CREATED, SITE_PK, context, policy_variant

SEED = 42
CTX = context(SEED)
MF = CTX.mf
POLICY_NAMES = ("alias_layout_policy_v1", "day_effect_policy_v1", "route_rng_policy_v1", "virtual_edge_policy_v1")
TZS = ["America/New_York", "Asia/Tokyo", "Europe/Berlin", "Europe/London"]
ISOS = ["DE", "GB", "JP", "US"]
MODULE5, MODULE6 = "2B.S5.router", "2B.S6.edge_router"
EDGES = [("edge-ams", "NL", 52.37, 4.90), ("edge-fra", "DE", 50.11, 8.68), ("edge-iad", "US", 38.95, -77.45)]
DAY_PK = ["merchant_id", "utc_day", "tz_group_id"]


def _counters(mid: np.ndarray, lo: np.ndarray) -> dict:
    n = len(mid)
    return {"rng_counter_before_hi": pl.Series(mid, dtype=pl.UInt64), "rng_counter_before_lo": pl.Series(lo, dtype=pl.UInt64),
            "rng_counter_after_hi": pl.Series(mid, dtype=pl.UInt64), "rng_counter_after_lo": pl.Series(lo + 1, dtype=pl.UInt64),
            "draws": pl.Series(np.ones(n), dtype=pl.UInt32), "blocks": pl.Series(np.ones(n), dtype=pl.UInt32)}


def _trace(events: pl.DataFrame) -> dict:
    """The trace row the law asks for: totals, first event's before and last event's after counter."""
    return {"module": events["module"][0], "substream_label": events["substream_label"][0], "events": events.height,
            "draws": events.height, "blocks": events.height,
            "first_counter_hi": events["rng_counter_before_hi"][0], "first_counter_lo": events["rng_counter_before_lo"][0],
            "last_counter_hi": events["rng_counter_after_hi"][-1], "last_counter_lo": events["rng_counter_after_lo"][-1]}


def build_world(policy_dir, n_merchants: int = 7, n_arrivals: int = 500, rng_seed: int = 3) -> tuple[dict, dict]:
    """(inputs, policies) of S7 for a small world that obeys every law S7 audits.

    Merchant ids span the u64 range (two above 2^63); merchants have 1-3 tz groups and 1-6 sites;
    two merchants are virtual. S2 comes from the real S2 state; S3..S6 outputs are written here
    directly from the laws (small Python loops are fine at this size).
    """
    rng = np.random.default_rng(rng_seed)
    policies = {n: load_policy(n, policy_dir) for n in POLICY_NAMES}
    day_range = policies["day_effect_policy_v1"].data["day_range"]
    days = np.arange(np.datetime64(day_range["start"]), np.datetime64(day_range["end"]) + 1)
    day_txt = [str(d) for d in days]

    mids = np.sort(np.r_[rng.integers(1, 2**62, n_merchants - 2, dtype=np.uint64),
                         np.array([2**63 + 11, 2**64 - 5], dtype=np.uint64)])
    virtual = {int(mids[1]), int(mids[-1])}
    site_rows = []
    for i, m in enumerate(mids):
        groups = sorted(rng.choice(TZS, size=1 + i % 3, replace=False))
        k = len(groups) + int(rng.integers(0, 4))
        tz = groups + list(rng.choice(groups, size=k - len(groups)))
        for j, t in enumerate(tz):
            site_rows.append((int(m), ISOS[j % 2 + (i % 2) * 2], t))
    sites = pl.DataFrame(site_rows, schema={"merchant_id": pl.UInt64, "legal_country_iso": pl.String, "tzid": pl.String},
                         orient="row").with_columns(
        site_order=pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over("merchant_id", "legal_country_iso")).sort(SITE_PK)
    w = np.concatenate([rng.dirichlet(np.full(n, 1.5)) for n in sites.group_by("merchant_id", maintain_order=True).len()["len"]])
    sites = sites.with_columns(p_weight=pl.Series(w))
    s1 = sites.select(*SITE_PK, "p_weight", weight_source=pl.lit("profile_mixture_v2"), weight_profile=pl.lit("small"),
                      mixture_component=pl.lit("hub_spoke"), alpha_used=pl.lit(1.5), quantised_bits=pl.lit(24, pl.Int32),
                      floor_applied=pl.lit(False), created_utc=pl.lit(CREATED))
    site_tz = sites.select(*SITE_PK, "tzid", tzid_source=pl.lit("polygon"))
    s2 = s2_alias_tables.run({"s1_site_weights": s1}, {"alias_layout_policy_v1": policies["alias_layout_policy_v1"]}, CTX)

    # S3 on the full grid with the counter law; S4 = base share x gamma, renormalised.
    groups = sites.group_by("merchant_id", "tzid").agg(base_share=pl.col("p_weight").sum()).sort("merchant_id", "tzid")
    groups = groups.with_columns(g=pl.int_range(pl.len()).over("merchant_id"), n_g=pl.len().over("merchant_id"))
    grid = groups.join(pl.DataFrame({"utc_day": day_txt, "d": np.arange(len(days))}), how="cross")
    grid = grid.with_columns(gamma=pl.Series(np.exp(rng.normal(-0.02, 0.2, grid.height)))).sort("merchant_id", "utc_day", "tzid")
    s3 = grid.select("merchant_id", "utc_day", tz_group_id="tzid", gamma="gamma", log_gamma=pl.col("gamma").log(),
                     sigma_gamma=pl.lit(0.2), weekly_amp=pl.lit(0.05), sigma_source=pl.lit("segment"),
                     rng_stream_id=pl.lit("2B.S3.day_effects"), rng_counter_hi="merchant_id",
                     rng_counter_lo=(pl.col("d") * pl.col("n_g") + pl.col("g")).cast(pl.UInt64), created_utc=pl.lit(CREATED))
    s4 = grid.with_columns(mass_raw=pl.col("base_share") * pl.col("gamma")).with_columns(
        denom_raw=pl.col("mass_raw").sum().over("merchant_id", "utc_day")).select(
        "merchant_id", "utc_day", tz_group_id="tzid", p_group=pl.col("mass_raw") / pl.col("denom_raw"),
        base_share="base_share", gamma="gamma", mass_raw="mass_raw", denom_raw="denom_raw",
        regularizer_applied=pl.lit(False), regularizer_delta_mass=pl.lit(0.0), created_utc=pl.lit(CREATED))

    # Roster in (utc_timestamp, merchant_id) order; ordinals per merchant in that order.
    pick = rng.choice(mids, size=n_arrivals)
    secs = rng.integers(0, len(days) * 86400, n_arrivals)
    ts = [str(np.datetime64(day_range["start"]) + np.timedelta64(int(s), "s")) + ".000000Z" for s in secs]
    roster = pl.DataFrame({"merchant_id": pl.Series(pick, dtype=pl.UInt64), "utc_timestamp": [t.replace(" ", "T") for t in ts]})
    roster = roster.sort("utc_timestamp", "merchant_id").with_columns(
        utc_day=pl.col("utc_timestamp").str.slice(0, 10),
        is_virtual=pl.col("merchant_id").is_in(pl.Series(sorted(virtual), dtype=pl.UInt64).implode()),
        merchant_class=pl.lit("grocery"), channel=pl.lit("card_present"))

    # S5 events in (merchant_id, arrival_seq) order: a group by p_group, then a site inside it.
    arrivals = roster.with_columns(seq=pl.int_range(pl.len(), dtype=pl.UInt64).over("merchant_id")).sort("merchant_id", "seq")
    s4_by = {(r["merchant_id"], r["utc_day"]): [] for r in s4.iter_rows(named=True)}
    for r in s4.iter_rows(named=True):
        s4_by[(r["merchant_id"], r["utc_day"])].append((r["tz_group_id"], r["p_group"]))
    sid = site_ids(sites["merchant_id"].to_list(), sites["legal_country_iso"].to_list(), sites["site_order"].to_list())
    by_group: dict = {}
    for row, s in zip(sites.iter_rows(named=True), sid):
        by_group.setdefault((row["merchant_id"], row["tzid"]), []).append((int(s), row["legal_country_iso"], row["site_order"]))
    g_tz, g_p, s_pick = [], [], []
    for r in arrivals.iter_rows(named=True):
        mix = s4_by[(r["merchant_id"], r["utc_day"])]
        j = rng.choice(len(mix), p=np.array([p for _, p in mix]) / sum(p for _, p in mix))
        g_tz.append(mix[j][0])
        g_p.append(mix[j][1])
        cands = by_group[(r["merchant_id"], mix[j][0])]
        s_pick.append(cands[rng.integers(len(cands))])
    mid = arrivals["merchant_id"].to_numpy()
    seq = arrivals["seq"].to_numpy()
    n = arrivals.height
    base = {"merchant_id": arrivals["merchant_id"], "arrival_seq": arrivals["seq"], "utc_day": arrivals["utc_day"],
            "tz_group_id": g_tz}
    group_ev = pl.DataFrame({"module": [MODULE5] * n, "substream_label": ["alias_pick_group"] * n, **base,
                             "p_group": g_p, **_counters(mid, 2 * seq)})
    site_ev = pl.DataFrame({"module": [MODULE5] * n, "substream_label": ["alias_pick_site"] * n, **base,
                            "site_id": pl.Series([s[0] for s in s_pick], dtype=pl.UInt64),
                            "legal_country_iso": [s[1] for s in s_pick],
                            "site_order": pl.Series([s[2] for s in s_pick], dtype=pl.Int32), **_counters(mid, 2 * seq + 1)})

    virt = roster.filter("is_virtual").with_columns(
        v=pl.int_range(pl.len(), dtype=pl.UInt64).over("merchant_id")).sort("merchant_id", "v")
    e = [EDGES[i] for i in rng.integers(0, len(EDGES), virt.height)]
    edge_ev = pl.DataFrame({"module": [MODULE6] * virt.height, "substream_label": ["cdn_edge_pick"] * virt.height,
                            "merchant_id": virt["merchant_id"], "virtual_seq": virt["v"], "utc_day": virt["utc_day"],
                            "edge_id": [x[0] for x in e], "ip_country": [x[1] for x in e],
                            "edge_lat": [x[2] for x in e], "edge_lon": [x[3] for x in e],
                            **_counters(virt["merchant_id"].to_numpy(), virt["v"].to_numpy())})

    sealed = sorted([{"asset_id": p.name, "version_tag": p.data.get("version_tag", ""), "sha256_hex": p.sha256,
                      "path": f"policies/{p.path.name}", "partition": ""} for p in policies.values()]
                    + [{"asset_id": "s5_arrival_roster", "version_tag": "2B", "sha256_hex": "00" * 32,
                        "path": "roster.parquet", "partition": ""}], key=lambda r: r["asset_id"])
    receipt = {"component": "2B.S0", "manifest_fingerprint": MF, "seed": SEED, "parameter_hash": CTX.parameter_hash,
               "run_id": CTX.run_id, "verified_at_utc": CREATED, "sealed_inputs": [r["asset_id"] for r in sealed],
               "policies": {p.name: p.sha256 for p in policies.values()}}
    inputs = {
        "s0_gate_receipt": receipt, "sealed_inputs": sealed, "s1_site_weights": s1,
        "s2_alias_index": s2["s2_alias_index"], "s2_alias_blob": s2["s2_alias_blob"],
        "s3_day_effects": s3, "s4_group_weights": s4, "site_timezones": site_tz, "s5_arrival_roster": roster,
        "rng_event_alias_pick_group": group_ev, "rng_event_alias_pick_site": site_ev,
        "rng_trace_s5": pl.DataFrame([_trace(group_ev), _trace(site_ev)]),
        "rng_event_cdn_edge_pick": edge_ev, "rng_trace_s6": pl.DataFrame([_trace(edge_ev)]),
    }
    return inputs, policies


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(policy_variant(tmp_path_factory.mktemp("s7"), {}))


def audit(inputs, policies) -> dict:
    return s7_audit.run(inputs, policies, CTX)["s7_audit_report"]


def failed(report) -> set[str]:
    return {c["id"] for c in report["checks"] if c["status"] == "FAIL"}


def detail(report, check_id) -> str:
    return next(c["detail"] for c in report["checks"] if c["id"] == check_id)


def with_(inputs: dict, **changes) -> dict:
    return {**inputs, **changes}


def edit(df: pl.DataFrame, row: int, **values) -> pl.DataFrame:
    """df with some cells of one row replaced (same dtypes)."""
    return df.with_columns(pl.when(pl.int_range(pl.len()) == row).then(pl.lit(v, dtype=df[c].dtype)).otherwise(pl.col(c)).alias(c)
                           for c, v in values.items())


# ------------------------------------------------------------------------------------------------


def test_consistent_world_passes_every_check(world):
    inputs, policies = world
    report = audit(inputs, policies)
    assert failed(report) == set(), [c for c in report["checks"] if c["status"] == "FAIL"]
    ids = [c["id"] for c in report["checks"]]
    assert ids == sorted(ids)
    assert {"S2.BLOB_DIGEST", "S2.SLICE_BOUNDS", "S2.DECODE_PARITY", "S3S4.KEYSET", "S4.GAMMA_ECHO", "S4.MASS",
            "S4.BASE_SHARE", "S5.EVENT_COUNT", "S5.COUNTERS", "S5.SITE_TZ", "S5.GROUP_DAY", "S6.EVENT_COUNT",
            "S6.COUNTERS", "TRACE.TOTALS", "POLICY.DIGESTS"} <= set(ids)
    assert report["summary"] == {"overall": "PASS", "passed": len(ids), "failed": 0}
    header = (report["component"], report["manifest_fingerprint"], report["seed"], report["created_utc"])
    assert header == ("2B.S7", MF, SEED, CREATED)
    m = report["metrics"]
    assert m["arrivals"] == inputs["s5_arrival_roster"].height
    assert m["s5_group_events"] == m["s5_site_events"] == m["arrivals"]
    assert m["s6_edge_events"] == m["virtual_arrivals"] > 0
    assert 0 <= m["decode_max_abs_delta"] <= 1.2e-7
    assert m["mass_max_abs_delta"] <= 1e-9 and m["base_share_max_abs_delta"] <= 1e-12
    # The report is canonical JSON as it stands, and the same inputs give the same bytes.
    assert canonical_json(report) == canonical_json(audit(inputs, policies))


def test_flipped_blob_byte(world):
    inputs, policies = world
    blob = bytearray(inputs["s2_alias_blob"])
    blob[16 + 3] ^= 0x40  # the high byte of the first slice's first q
    report = audit(with_(inputs, s2_alias_blob=bytes(blob)), policies)
    assert {"S2.BLOB_DIGEST", "S2.SLICE_CHECKSUMS", "S2.DECODE_PARITY"} <= failed(report) <= {
        "S2.BLOB_DIGEST", "S2.SLICE_CHECKSUMS", "S2.DECODE_PARITY", "S2.SLICE_HEADERS"}
    assert "max" in detail(report, "S2.DECODE_PARITY")
    assert report["summary"]["overall"] == "FAIL"


def test_slice_overlap_and_misalignment(world):
    inputs, policies = world
    index = dict(inputs["s2_alias_index"])
    index["merchants"] = [dict(e) for e in index["merchants"]]
    index["merchants"][1]["offset"] = index["merchants"][0]["offset"] + 8  # aligned, but inside slice 0
    index["merchants"][2]["offset"] += 4  # not 8-byte aligned
    report = audit(with_(inputs, s2_alias_index=index), policies)
    assert "S2.SLICE_BOUNDS" in failed(report)
    assert "overlap" in detail(report, "S2.SLICE_BOUNDS") and "aligned" in detail(report, "S2.SLICE_BOUNDS")
    assert detail(report, "S2.DECODE_PARITY").startswith("cannot run")


def test_p_group_off_by_1e6(world):
    inputs, policies = world
    s4 = inputs["s4_group_weights"]
    report = audit(with_(inputs, s4_group_weights=edit(s4, 5, p_group=s4["p_group"][5] + 1e-6)), policies)
    assert "S4.MASS" in failed(report) <= {"S4.MASS", "S5.GROUP_ECHO"}
    assert report["metrics"]["mass_max_abs_delta"] == pytest.approx(1e-6, rel=1e-6)


def test_gamma_echo_broken(world):
    inputs, policies = world
    s4 = inputs["s4_group_weights"]
    report = audit(with_(inputs, s4_group_weights=edit(s4, 7, gamma=float(np.nextafter(s4["gamma"][7], 2.0)))), policies)
    assert failed(report) == {"S4.GAMMA_ECHO"}
    assert report["metrics"]["gamma_echo_mismatches"] == 1


def test_base_share_not_from_s1(world):
    inputs, policies = world
    s4 = inputs["s4_group_weights"]
    report = audit(with_(inputs, s4_group_weights=edit(s4, 0, base_share=s4["base_share"][0] + 1e-9)), policies)
    assert failed(report) == {"S4.BASE_SHARE"}


def test_s3_s4_key_sets_differ(world):
    inputs, policies = world
    s4 = inputs["s4_group_weights"]
    # Drop one group of a multi-group merchant-day: the key sets differ and that day loses mass.
    row = int(s4.with_row_index().filter(pl.len().over("merchant_id", "utc_day") > 1)["index"][0])
    report = audit(with_(inputs, s4_group_weights=pl.concat([s4.slice(0, row), s4.slice(row + 1)])), policies)
    assert {"S3S4.KEYSET", "S4.MASS"} <= failed(report)
    assert "only in S3" in detail(report, "S3S4.KEYSET")


def test_missing_site_event(world):
    inputs, policies = world
    site = inputs["rng_event_alias_pick_site"]
    report = audit(with_(inputs, rng_event_alias_pick_site=pl.concat([site.slice(0, 10), site.slice(11)])), policies)
    # The trace still counts the dropped event, so the trace reconciliation fails as well.
    assert failed(report) == {"S5.EVENT_COUNT", "TRACE.TOTALS"}
    assert "1 expected without an event" in detail(report, "S5.EVENT_COUNT")


def test_duplicated_counter(world):
    inputs, policies = world
    site = inputs["rng_event_alias_pick_site"]
    # The site event reuses its group event's counter (m, 2k): two draws from one block.
    bad = edit(site, 3, rng_counter_before_lo=site["rng_counter_before_lo"][3] - 1,
               rng_counter_after_lo=site["rng_counter_after_lo"][3] - 1)
    report = audit(with_(inputs, rng_event_alias_pick_site=bad), policies)
    assert failed(report) == {"S5.COUNTERS"}
    assert "share a counter" in detail(report, "S5.COUNTERS")


def test_duplicated_group_event(world):
    inputs, policies = world
    grp = inputs["rng_event_alias_pick_group"]
    dup = pl.concat([grp.slice(0, 5), grp.slice(4, 1), grp.slice(5)])
    report = audit(with_(inputs, rng_event_alias_pick_group=dup), policies)
    assert {"S5.EVENT_COUNT", "S5.COUNTERS", "TRACE.TOTALS"} <= failed(report)


def test_site_in_wrong_tz(world):
    inputs, policies = world
    site, tz = inputs["rng_event_alias_pick_site"], inputs["site_timezones"]
    # An arrival of a multi-tz merchant whose logged site is swapped for one of its sites elsewhere.
    multi = tz.group_by("merchant_id").agg(pl.col("tzid").n_unique().alias("n")).filter(pl.col("n") > 1)["merchant_id"]
    row = int(site.with_row_index().filter(pl.col("merchant_id").is_in(multi.implode()))["index"][0])
    ev = site.row(row, named=True)
    other = tz.filter((pl.col("merchant_id") == ev["merchant_id"]) & (pl.col("tzid") != ev["tz_group_id"])).row(0, named=True)
    new_id = int(site_ids([other["merchant_id"]], [other["legal_country_iso"]], [other["site_order"]])[0])
    bad = edit(site, row, site_id=new_id, legal_country_iso=other["legal_country_iso"], site_order=other["site_order"])
    report = audit(with_(inputs, rng_event_alias_pick_site=bad), policies)
    assert failed(report) == {"S5.SITE_TZ"}


def test_site_id_off_the_hash_law(world):
    inputs, policies = world
    site = inputs["rng_event_alias_pick_site"]
    report = audit(with_(inputs, rng_event_alias_pick_site=edit(site, 0, site_id=12345)), policies)
    assert failed(report) == {"S5.SITE_KEY", "S5.SITE_TZ"}


def test_group_event_on_wrong_day(world):
    inputs, policies = world
    grp = inputs["rng_event_alias_pick_group"]
    day = str(np.datetime64(grp["utc_day"][2]) + 1)
    report = audit(with_(inputs, rng_event_alias_pick_group=edit(grp, 2, utc_day=day)), policies)
    assert "S5.GROUP_DAY" in failed(report) <= {"S5.GROUP_DAY", "S5.GROUP_ECHO"}


def test_days_swapped_between_two_arrivals_of_one_merchant(world):
    """Same (merchant, day) counts, wrong order: the cheap proof must not be fooled."""
    inputs, policies = world
    grp, site = inputs["rng_event_alias_pick_group"], inputs["rng_event_alias_pick_site"]
    m0 = grp["merchant_id"][0]
    rows = grp.with_row_index().filter(pl.col("merchant_id") == m0)
    i = int(rows["index"][0])
    j = int(rows.filter(pl.col("utc_day") != rows["utc_day"][0])["index"][0])
    di, dj = grp["utc_day"][i], grp["utc_day"][j]
    swapped = {k: edit(edit(df, i, utc_day=dj), j, utc_day=di)
               for k, df in (("rng_event_alias_pick_group", grp), ("rng_event_alias_pick_site", site))}
    report = audit(with_(inputs, **swapped), policies)
    assert "S5.GROUP_DAY" in failed(report) <= {"S5.GROUP_DAY", "S5.GROUP_ECHO"}
    assert "2 rng_event_alias_pick_group events" in detail(report, "S5.GROUP_DAY")


def test_roster_out_of_time_order(world):
    inputs, policies = world
    roster = inputs["s5_arrival_roster"]
    last = roster.height - 1
    moved = pl.concat([roster.slice(last, 1), roster.slice(0, last)])
    report = audit(with_(inputs, s5_arrival_roster=moved), policies)
    assert "S5.ROSTER" in failed(report)
    assert "utc_timestamp order" in detail(report, "S5.ROSTER")


def test_virtual_arrival_without_edge_event(world):
    inputs, policies = world
    edge = inputs["rng_event_cdn_edge_pick"]
    report = audit(with_(inputs, rng_event_cdn_edge_pick=edge.slice(0, edge.height - 1)), policies)
    assert failed(report) == {"S6.EVENT_COUNT", "TRACE.TOTALS"}
    assert "expected without an event" in detail(report, "S6.EVENT_COUNT")


def test_edge_event_for_non_virtual_arrival(world):
    inputs, policies = world
    edge, roster = inputs["rng_event_cdn_edge_pick"], inputs["s5_arrival_roster"]
    plain = roster.filter(~pl.col("is_virtual")).row(0, named=True)
    extra = edge.slice(0, 1).with_columns(
        merchant_id=pl.lit(plain["merchant_id"], pl.UInt64), virtual_seq=pl.lit(0, pl.UInt64), utc_day=pl.lit(plain["utc_day"]),
        rng_counter_before_hi=pl.lit(plain["merchant_id"], pl.UInt64), rng_counter_before_lo=pl.lit(0, pl.UInt64),
        rng_counter_after_hi=pl.lit(plain["merchant_id"], pl.UInt64), rng_counter_after_lo=pl.lit(1, pl.UInt64))
    bad = pl.concat([edge, extra]).sort("merchant_id", "virtual_seq")
    trace = inputs["rng_trace_s6"].with_columns(pl.lit(bad.height, pl.Int64).alias(c) for c in ("events", "draws", "blocks"))
    report = audit(with_(inputs, rng_event_cdn_edge_pick=bad, rng_trace_s6=trace), policies)
    assert "S6.EVENT_COUNT" in failed(report) <= {"S6.EVENT_COUNT", "TRACE.TOTALS"}
    assert "1 events matching no expected arrival" in detail(report, "S6.EVENT_COUNT")


def test_trace_totals_off_by_one(world):
    inputs, policies = world
    trace = inputs["rng_trace_s5"]
    report = audit(with_(inputs, rng_trace_s5=edit(trace, 1, events=trace["events"][1] + 1)), policies)
    assert failed(report) == {"TRACE.TOTALS"}
    assert "alias_pick_site" in detail(report, "TRACE.TOTALS")


def test_trace_last_counter_wrong(world):
    inputs, policies = world
    trace = inputs["rng_trace_s6"]
    report = audit(with_(inputs, rng_trace_s6=edit(trace, 0, last_counter_lo=trace["last_counter_lo"][0] - 1)), policies)
    assert failed(report) == {"TRACE.TOTALS"}


def test_policy_bytes_changed_after_sealing(world, tmp_path):
    inputs, policies = world
    pol = policies["route_rng_policy_v1"]
    moved = tmp_path / pol.path.name
    moved.write_bytes(pol.path.read_bytes())
    changed = dict(policies, route_rng_policy_v1=dataclasses.replace(pol, path=moved))
    assert failed(audit(inputs, changed)) == set()
    moved.write_bytes(pol.path.read_bytes().replace(b"4096", b"4095"))
    report = audit(inputs, changed)
    assert failed(report) == {"POLICY.DIGESTS"}
    assert "route_rng_policy_v1: file bytes changed after sealing" in detail(report, "POLICY.DIGESTS")


def test_malformed_input_is_a_failed_check_not_a_crash(world):
    inputs, policies = world
    report = audit(with_(inputs, s4_group_weights=inputs["s4_group_weights"].drop("base_share")), policies)
    assert "S4.BASE_SHARE" in failed(report)
    assert detail(report, "S4.BASE_SHARE").startswith("cannot run")
    assert report["summary"]["overall"] == "FAIL"
    canonical_json(report)  # still a writable report


def test_unreadable_input_raises(world):
    inputs, policies = world
    with pytest.raises(EngineError, match="s2_alias_blob"):
        s7_audit.run({k: v for k, v in inputs.items() if k != "s2_alias_blob"}, policies, CTX)
    with pytest.raises(EngineError, match="s3_day_effects"):
        s7_audit.run(with_(inputs, s3_day_effects={"not": "a table"}), policies, CTX)


def test_real_s5_router_output_passes(world):
    """The audit agrees with the S5 state itself (not only with this file's reading of the law)."""
    s5_router = pytest.importorskip("engine.states.s5_router")
    inputs, policies = world
    roster = inputs["s5_arrival_roster"]
    merchants = (roster.group_by("merchant_id").agg(pl.col("is_virtual", "merchant_class", "channel").first())
                 .with_columns(home_country_iso=pl.lit("US"), mcc=pl.lit(5411, pl.Int32)).sort("merchant_id")
                 .select("merchant_id", "home_country_iso", "mcc", "merchant_class", "channel", "is_virtual"))
    from engine.policies import load_policy

    out = s5_router.run({k: {**inputs, "merchants": merchants}[k] for k in s5_router.READS},
                        {"route_rng_policy_v1": policies["route_rng_policy_v1"],
                         "roster_policy_v1": load_policy("roster_policy_v1")},
                        CTX)
    routed = with_(inputs, **{k: out[k] for k in ("rng_event_alias_pick_group", "rng_event_alias_pick_site", "rng_trace_s5")})
    assert failed(audit(routed, policies)) == set()


def test_real_s6_edge_router_output_passes(world):
    s6 = pytest.importorskip("engine.states.s6_edge_router")
    inputs, policies = world
    roster = inputs["s5_arrival_roster"]
    merchants = (roster.group_by("merchant_id").agg(pl.col("is_virtual", "merchant_class", "channel").first())
                 .with_columns(home_country_iso=pl.lit("US"), mcc=pl.lit(5411, pl.Int32)).sort("merchant_id")
                 .select("merchant_id", "home_country_iso", "mcc", "merchant_class", "channel", "is_virtual"))
    available = {**inputs, "merchants": merchants}
    out = s6.run({k: available[k] for k in s6.READS}, {k: policies[k] for k in s6.POLICIES}, CTX)
    routed = with_(inputs, **{k: out[k] for k in ("rng_event_cdn_edge_pick", "rng_trace_s6")})
    assert failed(audit(routed, policies)) == set()


def test_no_policies_to_recheck_fails(world):
    inputs, _ = world
    assert failed(audit(inputs, {})) == {"POLICY.DIGESTS"}


def test_pass_report_bundles_and_verifies(world, tmp_path):
    inputs, policies = world
    report = audit(inputs, policies)
    s1 = tmp_path / "data/s1/part-00000.parquet"  # an output the bundle vouches for, next to it
    s1.parent.mkdir(parents=True)
    s1.write_bytes(b"s1 rows")
    bundle = s8_bundle.run({"s0_gate_receipt": inputs["s0_gate_receipt"], "sealed_inputs": inputs["sealed_inputs"],
                            "s7_audit_report": report}, {}, CTX, bundle_path="data/bundle",
                           published=[{"dataset_id": "s1_site_weights", "path": "data/s1/part-00000.parquet",
                                       "sha256_hex": sha256_hex(b"s1 rows")}])["validation_bundle_2B"]
    (tmp_path / "data/bundle").mkdir()
    for rel, data in bundle.items():
        (tmp_path / "data/bundle" / rel).write_bytes(data)
    assert verify_bundle(tmp_path / "data/bundle")


# ------------------------------------------------------------------------------------------------
# merchant shards: run_shard per inclusive merchant_id range, finish over the partials

U64_MAX = 2**64 - 1
SHARDED_TABLES = ("s5_arrival_roster", "s3_day_effects", "s4_group_weights", "rng_event_alias_pick_group",
                  "rng_event_alias_pick_site", "rng_event_cdn_edge_pick")


def shard_ranges(inputs: dict, n: int, extra_cuts=()) -> list[tuple[int, int]]:
    """n contiguous inclusive ranges covering the u64 space, cut between the world's merchants
    (so that each holds some), plus extra cut points (which may leave ranges without merchants)."""
    mids = np.sort(inputs["s1_site_weights"]["merchant_id"].unique().to_numpy())
    starts = sorted({0, *(int(mids[len(mids) * i // n]) for i in range(1, n)), *extra_cuts})
    return list(zip(starts, [s - 1 for s in starts[1:]] + [U64_MAX]))


def shard_inputs(inputs: dict, lo: int, hi: int) -> dict:
    """What the pipeline hands one shard: every table with a merchant_id column cut to [lo, hi]."""
    keep = pl.col("merchant_id").is_between(pl.lit(lo, pl.UInt64), pl.lit(hi, pl.UInt64))
    return {k: v.filter(keep) if isinstance(v, pl.DataFrame) and "merchant_id" in v.columns else v
            for k, v in inputs.items()}


def sharded_audit(inputs: dict, policies: dict, ranges) -> dict:
    parts = [s7_audit.run_shard(shard_inputs(inputs, lo, hi), policies, CTX)["_part"] for lo, hi in ranges]
    rest = {k: v for k, v in inputs.items() if k not in SHARDED_TABLES}
    return s7_audit.finish(rest, policies, CTX, parts)["s7_audit_report"]


@pytest.mark.parametrize("n, extra_cuts", [(3, ()), (7, ()), (3, (1, 2**63, 2**63 + 12))],
                         ids=["3 shards", "7 shards", "with empty shards"])
def test_sharded_report_equals_single_shard(world, n, extra_cuts):
    inputs, policies = world
    ranges = shard_ranges(inputs, n, extra_cuts)
    assert len(ranges) == n + len(extra_cuts) and ranges[0][0] == 0 and ranges[-1][1] == U64_MAX
    cut = [shard_inputs(inputs, lo, hi)["s5_arrival_roster"].height for lo, hi in ranges]
    assert sum(cut) == inputs["s5_arrival_roster"].height and (0 in cut) == bool(extra_cuts)
    single = audit(inputs, policies)
    assert failed(single) == set()
    report = sharded_audit(inputs, policies, ranges)
    assert report == single
    assert canonical_json(report) == canonical_json(single)


def test_sharded_fault_in_one_shard_fails_the_same_check(world):
    inputs, policies = world
    ranges = shard_ranges(inputs, 3)
    last = inputs["s1_site_weights"]["merchant_id"].max()
    # A group event of the last merchant (last shard) echoes a p_group that is not S4's.
    grp = inputs["rng_event_alias_pick_group"]
    row = int(grp.with_row_index().filter(pl.col("merchant_id") == last)["index"][0])
    echo = with_(inputs, rng_event_alias_pick_group=edit(grp, row, p_group=grp["p_group"][row] * (1 + 1e-9)))
    # The last S4 row of a multi-group merchant-day deleted (that merchant is in the last shard too).
    s4 = inputs["s4_group_weights"]
    s4_row = int(s4.with_row_index().filter(pl.len().over("merchant_id", "utc_day") > 1)["index"][-1])
    assert s4["merchant_id"][s4_row] >= ranges[-1][0]
    dropped = with_(inputs, s4_group_weights=pl.concat([s4.slice(0, s4_row), s4.slice(s4_row + 1)]))
    for bad, must_fail in ((echo, {"S5.GROUP_ECHO"}), (dropped, {"S3S4.KEYSET", "S4.MASS"})):
        single = audit(bad, policies)
        assert must_fail <= failed(single)
        # Every problem lies in one shard, so even the FAIL details and the metrics agree.
        assert sharded_audit(bad, policies, ranges) == single
    # Faults in the first and the last shard: the same checks fail, each shard's problem is named.
    first = inputs["s1_site_weights"]["merchant_id"].min()
    row0 = int(grp.with_row_index().filter(pl.col("merchant_id") == first)["index"][0])
    both = with_(echo, rng_event_alias_pick_group=edit(echo["rng_event_alias_pick_group"], row0,
                                                       p_group=grp["p_group"][row0] * (1 + 1e-9)))
    single, report = audit(both, policies), sharded_audit(both, policies, ranges)
    assert failed(report) == failed(single) == {"S5.GROUP_ECHO"}
    text = detail(report, "S5.GROUP_ECHO")
    assert str(first) in text and str(last) in text and report["summary"]["overall"] == "FAIL"


def test_sharded_trace_totals_off_by_one(world):
    inputs, policies = world
    ranges = shard_ranges(inputs, 7)
    trace = inputs["rng_trace_s5"]
    bad = with_(inputs, rng_trace_s5=edit(trace, 1, events=trace["events"][1] + 1))
    report = sharded_audit(bad, policies, ranges)
    assert failed(report) == {"TRACE.TOTALS"}
    n = inputs["rng_event_alias_pick_site"].height
    assert f"alias_pick_site]: events: trace {n + 1}, logs {n}" in detail(report, "TRACE.TOTALS")
    assert report == audit(bad, policies)
    # The last counter comes from the last shard with edge events (not the last shard).
    edge = inputs["rng_trace_s6"]
    report = sharded_audit(with_(inputs, rng_trace_s6=edit(edge, 0, last_counter_lo=edge["last_counter_lo"][0] - 1)),
                           policies, ranges)
    assert failed(report) == {"TRACE.TOTALS"}


def test_shards_disagreeing_on_the_day_grid_fail(world):
    """Without the policy's day range each shard takes S3's own days: a shard whose grid is one
    day short is consistent alone, but not with the others."""
    inputs, policies = world
    ranges = shard_ranges(inputs, 3)
    s3, s4 = inputs["s3_day_effects"], inputs["s4_group_weights"]
    # The last shard's S3/S4 rows (and so its grid) stop a day early (its S5 echoes fail as well).
    final_day = s3["utc_day"].max()
    short = ~((pl.col("merchant_id") >= pl.lit(ranges[-1][0], pl.UInt64)) & (pl.col("utc_day") == final_day))
    no_grid = {k: v for k, v in policies.items() if k != "day_effect_policy_v1"}
    bad = with_(inputs, s3_day_effects=s3.filter(short), s4_group_weights=s4.filter(short))
    report = sharded_audit(bad, no_grid, ranges)
    assert "S3.COVERAGE" in failed(report) and "S3.COVERAGE" in failed(audit(bad, no_grid))
    assert "shards disagree on days" in detail(report, "S3.COVERAGE")


def test_shard_and_finish_read_their_own_inputs(world):
    inputs, policies = world
    shard = {k: v for k, v in inputs.items() if k in s7_audit.SHARD_READS}
    part = s7_audit.run_shard(shard, policies, CTX)["_part"]
    with pytest.raises(EngineError, match="s2_alias_blob"):
        s7_audit.finish({k: v for k, v in inputs.items() if k != "s2_alias_blob"}, policies, CTX, [part])
    with pytest.raises(EngineError, match="rng_event_cdn_edge_pick"):
        s7_audit.run_shard(with_(shard, rng_event_cdn_edge_pick=None), policies, CTX)
    rest = {k: v for k, v in inputs.items() if k not in SHARDED_TABLES}
    assert s7_audit.finish(rest, policies, CTX, [part])["s7_audit_report"] == audit(inputs, policies)


def test_site_of_another_merchant_fails_site_tz_in_any_sharding(world):
    """A site event naming another merchant's site in the right tz: S5.SITE_TZ counts the site as
    unknown (a shard would not hold it), so the verdict does not depend on the shard bounds."""
    inputs, policies = world
    site, tz = inputs["rng_event_alias_pick_site"], inputs["site_timezones"]
    ranges = shard_ranges(inputs, 3)
    ev = site.with_row_index().filter(pl.col("merchant_id") < pl.lit(ranges[1][0], pl.UInt64))
    other = tz.filter(pl.col("merchant_id") >= pl.lit(ranges[-1][0], pl.UInt64))
    pair = ev.join(other, left_on="tz_group_id", right_on="tzid", suffix="_other").row(0, named=True)
    new_id = int(site_ids([pair["merchant_id_other"]], [pair["legal_country_iso_other"]], [pair["site_order_other"]])[0])
    bad = with_(inputs, rng_event_alias_pick_site=edit(site, pair["index"], site_id=new_id,
                                                       legal_country_iso=pair["legal_country_iso_other"],
                                                       site_order=pair["site_order_other"]))
    single = audit(bad, policies)
    assert failed(single) == failed(sharded_audit(bad, policies, ranges)) == {"S5.SITE_KEY", "S5.SITE_TZ"}


# ------------------------------------------------------------------------------------------------
# the check registry: declared checks, their merge rules and metrics


def test_every_registered_check_appears_in_a_pass_report(world):
    inputs, policies = world
    report = audit(inputs, policies)
    assert [c["id"] for c in report["checks"]] == sorted(registry.CHECKS)
    assert all(c["status"] == "PASS" for c in report["checks"])
    declared = {m for check in registry.CHECKS.values() for m in check.metrics}
    assert set(report["metrics"]) == declared | {"audit_mode"}


class _Synthetic:
    """The least an audit needs to be: inputs to read and a place for the verdicts."""

    def __init__(self, inputs: dict):
        self.inputs = inputs
        self.outcomes: dict = {}


@pytest.fixture
def empty_registry(monkeypatch):
    """A registry of only the checks a test declares (the real ones stay untouched)."""
    monkeypatch.setattr(registry, "CHECKS", {})
    return registry


def _declare_synthetic_check(reg):
    @reg.shard_check("T.SYNTH", facts={"rows": reg.SUM, "worst": reg.MAX, "grid": reg.SAME},
                     metrics={"t_rows": "rows", "t_worst": "worst", "t_grid": "grid"},
                     pass_detail=lambda f: f"{f['rows']} rows, worst {f['worst']}")
    def synth(shard):
        values = shard.inputs["values"]
        if shard.inputs.get("explode"):
            raise KeyError("values_column")
        problems = [f"{int((values < 0).sum())} negative values"] if (values < 0).any() else []
        return problems, {"rows": len(values), "worst": float(values.max()) if len(values) else None,
                          "grid": shard.inputs.get("grid")}


def _settle(reg, shards: list[dict]) -> tuple[dict, dict]:
    parts = [reg.run_shard_checks(_Synthetic(s)) for s in shards]
    checks, metrics = reg.settle(_Synthetic({}), parts)
    return {c["id"]: c for c in checks}, metrics


def test_shard_facts_merge_as_declared(empty_registry):
    reg = empty_registry
    _declare_synthetic_check(reg)
    shards = [{"values": np.array([0.5, 2.0]), "grid": 90},
              {"values": np.array([], dtype=float), "grid": None},  # no rows: knows neither worst nor grid
              {"values": np.array([7.5, 1.0, 3.0]), "grid": 90}]
    checks, metrics = _settle(reg, shards)
    assert checks["T.SYNTH"] == {"id": "T.SYNTH", "status": "PASS", "detail": "5 rows, worst 7.5"}
    assert metrics == {"t_rows": 5, "t_worst": 7.5, "t_grid": 90}  # summed, maxed, the same in every shard
    # The merged facts do not depend on where the shard boundaries fall.
    assert _settle(reg, [{"values": np.array([0.5, 2.0, 7.5, 1.0, 3.0]), "grid": 90}]) == (checks, metrics)
    # NaN (a failed row) is ignored by the max unless nothing else is known; no rows at all is 0.0.
    assert _settle(reg, [{"values": np.array([np.nan]), "grid": 1}, {"values": np.array([2.0]), "grid": 1}])[1]["t_worst"] == 2.0
    assert _settle(reg, [{"values": np.array([np.nan]), "grid": 1}])[1]["t_worst"] is None  # NaN is written as null
    assert _settle(reg, [{"values": np.array([], dtype=float), "grid": 1}])[1]["t_worst"] == 0.0


def test_shard_problems_and_disagreements_fail_the_check(empty_registry):
    reg = empty_registry
    _declare_synthetic_check(reg)
    checks, metrics = _settle(reg, [{"values": np.array([1.0]), "grid": 90}, {"values": np.array([-1.0, -2.0]), "grid": 91}])
    assert checks["T.SYNTH"]["status"] == "FAIL"
    assert checks["T.SYNTH"]["detail"] == "2 negative values; shards disagree on grid: [90, 91]"
    assert metrics == {"t_rows": 3, "t_worst": 1.0}  # a constant the shards disagree on has no metric
    # A shard that cannot run names why, and without its facts there are no metrics.
    checks, metrics = _settle(reg, [{"values": np.array([1.0]), "grid": 90}, {"values": np.array([1.0]), "explode": True}])
    assert checks["T.SYNTH"]["detail"] == "cannot run: KeyError: 'values_column'" and metrics == {}


def test_registry_refuses_inconsistent_declarations(empty_registry):
    reg = empty_registry
    _declare_synthetic_check(reg)
    with pytest.raises(ValueError, match="registered twice"):
        _declare_synthetic_check(reg)
    with pytest.raises(ValueError, match="already written"):
        reg.global_check("T.OTHER", metrics={"t_rows": "n"}, pass_detail=str)(lambda audit: ([], {"n": 1}))
    with pytest.raises(ValueError, match="undeclared facts"):
        reg.shard_check("T.THIRD", facts={"n": reg.SUM}, metrics={"t_n": "m"}, pass_detail=str)(lambda audit: ([], {}))

    # Facts a check returns but does not declare would be merged wrongly: a bug, raised, not reported.
    @reg.shard_check("T.UNDECLARED", facts={"n": reg.SUM}, pass_detail=str)
    def undeclared(shard):
        return [], {"n": 1, "m": 2}

    with pytest.raises(TypeError, match="T.UNDECLARED returned facts"):
        reg.run_shard_checks(_Synthetic({"values": np.array([1.0])}))


def test_a_failed_preparation_is_built_once_and_blocks_every_check_that_needs_it():
    calls = []

    class Prepared:
        @registry.preparation
        def table(self):
            calls.append("table")
            raise KeyError("column")

        @registry.preparation.named("legacy_name")
        def renamed(self):
            return self.table

        @registry.preparation
        def fine(self):
            calls.append("fine")
            return 42

    p = Prepared()
    for _ in range(2):
        with pytest.raises(registry.Blocked, match=r"^table: KeyError: 'column'$"):
            p.renamed  # noqa: B018 - the property access is the test
        with pytest.raises(registry.Blocked, match=r"^table: KeyError"):
            p.table  # noqa: B018
    assert p.fine == p.fine == 42
    assert calls == ["table", "fine"]

    class Broken:
        @registry.preparation.named("legacy_name")
        def renamed(self):
            raise ValueError("bad")

    with pytest.raises(registry.Blocked, match=r"^legacy_name: ValueError: bad$"):
        Broken().renamed  # noqa: B018
