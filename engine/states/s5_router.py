"""S5 router: every arrival of the roster picks a tz group, then a site inside that group.

Law (STATES.md, "S5 router"; ARCHITECTURE.md, "RNG law"):
- k = arrival_seq = the arrival's 0-based ordinal among its merchant's arrivals in roster order.
- Group pick: u1 = uniform at counter (merchant_id, 2k) of stream `2B.S5.routing`, alias decode
  over the S4 mix p_group of (merchant, utc_day), groups in tzid order.
- Site pick: u2 = uniform at (merchant_id, 2k + 1), alias decode over the merchant's S1 weights
  restricted to the chosen group (one table per (merchant, group), sites in S1 PK order).
- Events carry before/after counters: group (m, 2k) -> (m, 2k+1), site (m, 2k+1) -> (m, 2k+2);
  one draw and one Philox block each.

How it is computed: the whole roster at once, never a Python loop over arrivals. Every alias table
is built up front (one segmented build for all S4 merchant-days, one for all (merchant, group) site
sets) and addressed by segment index; arrivals are put in (merchant_id, arrival_seq) order, which
is both the event logs' primary-key order and what makes merchant shards contiguous slices.
The lookup tables of a shard are bounded by the policy's `shard_merchants`, the Philox and decode
temporaries by BLOCK arrivals; since every uniform is a pure function of (merchant_id, counter),
the output is identical for any shard size (tested).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .. import alias
from ..context import Context
from ..errors import EngineError
from ..identity import site_ids
from ..rng import STREAM_S5, Stream
from ..shards import merge_reports, merge_traces, run_whole

READS = ("s5_arrival_roster", "s4_group_weights", "s1_site_weights", "site_timezones")
POLICIES = ("route_rng_policy_v1",)
WRITES = ("rng_event_alias_pick_group", "rng_event_alias_pick_site", "rng_trace_s5", "s5_selection_log")

MODULE = "2B.S5.router"
SUB_GROUP = "alias_pick_group"
SUB_SITE = "alias_pick_site"
SITE_PK = ["merchant_id", "legal_country_iso", "site_order"]
MASS_TOL = 1e-9  # sum-to-one tolerance of an S4 merchant-day (STATES.md, S4)
DEFAULT_SHARD_MERCHANTS = 4096


# --------------------------------------------------------------------------------------------
# small helpers


def _day_numbers(col: pl.Series, where: str) -> np.ndarray:
    """utc_day 'YYYY-MM-DD' -> days since 1970-01-01 (int64), so merchant-days become integer keys."""
    try:
        days = col.str.to_date("%Y-%m-%d", strict=True)
    except Exception:  # polars raises its own error types; report ours
        bad = col.filter(col.str.to_date("%Y-%m-%d", strict=False).is_null())
        raise EngineError(where, "utc_day", f"not a YYYY-MM-DD date: {bad[0]!r}") from None
    return days.to_physical().to_numpy().astype(np.int64)


def _day_runs(col: pl.Series, where: str) -> tuple[np.ndarray, pl.Series, np.ndarray]:
    """(run id per row, text of each run, day number of each run) for runs of equal utc_day.

    The roster is sorted by time, so a million arrivals hold only about as many runs as days:
    parsing each run once, and later re-emitting the log's utc_day by gathering from the run
    texts, is several times cheaper than parsing and gathering a million strings, and keeps the
    roster's exact text. Any order stays correct (there are just more runs).
    """
    col = col.cast(pl.String)
    run = col.rle_id().to_numpy().astype(np.int64)
    starts = np.flatnonzero(np.diff(run, prepend=-1))
    text = col.gather(starts)
    return run, text, _day_numbers(text, where)


def _day_text(day_number: int) -> str:
    return str(np.datetime64(int(day_number), "D"))


def _segments(sorted_keys: np.ndarray) -> np.ndarray:
    """Offsets [0, s1, ..., n] of the runs of equal keys in an already sorted key array."""
    n = sorted_keys.size
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    return np.concatenate(([0], starts, [n])).astype(np.int64)


def _dense_lookup(seg_keys: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Table t over keys [lo, hi): t[key - lo] = segment index, -1 where no segment.

    seg_keys is sorted, so the shard's segments are one contiguous slice; a dense table then
    turns the per-arrival lookup into a single gather (much cheaper than a binary search per
    arrival) while its size stays bounded by the shard, not by the whole world.
    """
    i0, i1 = np.searchsorted(seg_keys, [lo, hi])
    table = np.full(hi - lo, -1, dtype=np.int32)  # int32: half the bytes, segment counts fit
    table[seg_keys[i0:i1] - lo] = np.arange(i0, i1, dtype=np.int32)
    return table


BLOCK = 1 << 16  # arrivals per inner step of the routing loop, see _route_shard


def blocked_uniforms(stream: Stream, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """stream.uniforms evaluated on blocks of BLOCK counters (same values as one call).

    Philox2x64-10 is some forty elementwise numpy passes; on 2^16 counters every temporary
    (512 KiB) stays in cache, which measured 1.5-2.5x faster than passes over million-element
    arrays (the alias decode gains likewise). Each uniform depends only on its own counter, so blocking cannot change a value.
    """
    out = np.empty(hi.size, dtype=np.float64)
    for i in range(0, hi.size, BLOCK):
        out[i:i + BLOCK] = stream.uniforms(hi[i:i + BLOCK], lo[i:i + BLOCK])
    return out


def constant_column(name: str, value, n: int, dtype) -> pl.Series:
    # new_from_index broadcasts one value without building a Python list of n items
    return pl.Series(name, [value], dtype=dtype).new_from_index(0, n) if n else pl.Series(name, [], dtype=dtype)


# --------------------------------------------------------------------------------------------
# static tables (built once per run, independent of the shard size)


class _Sites:
    """Every (merchant, tz group) site set of S1, as segments of one flat alias table."""

    def __init__(self, s1: pl.DataFrame, tz: pl.DataFrame, merchants: np.ndarray, tz_cats: pl.Series):
        n_tz = tz_cats.len()
        key_cols = [pl.col("merchant_id").cast(pl.UInt64), pl.col("legal_country_iso").cast(pl.String),
                    pl.col("site_order").cast(pl.Int32)]
        s1k = s1.select(*key_cols, pl.col("p_weight").cast(pl.Float64))
        tzk = tz.select(*key_cols, pl.col("tzid").cast(pl.String))
        for name, frame in (("s1_site_weights", s1k), ("site_timezones", tzk)):
            dup = frame.select(SITE_PK).is_duplicated()
            if dup.any():
                raise EngineError(name, f"row {int(dup.arg_max())}", f"duplicate site key {frame.row(int(dup.arg_max()))[:3]}")
        sites = s1k.join(tzk, on=SITE_PK, how="left", maintain_order="left").sort(SITE_PK, maintain_order=True)
        if sites["tzid"].null_count():
            row = sites.filter(pl.col("tzid").is_null()).row(0)
            raise EngineError("site_timezones", f"site {row[:3]}", "S1 site has no tzid in site_timezones")
        w = sites["p_weight"].to_numpy()
        if not np.all(np.isfinite(w) & (w >= 0)):
            row = sites.row(int(np.flatnonzero(~(np.isfinite(w) & (w >= 0)))[0]))
            raise EngineError("s1_site_weights", f"site {row[:3]}", f"p_weight must be finite and >= 0, got {row[3]!r}")

        midx = np.searchsorted(merchants, sites["merchant_id"].to_numpy())
        tzc = sites["tzid"].cast(pl.Enum(tz_cats)).to_physical().to_numpy().astype(np.int64)
        # Stable sort by (merchant, tz group): sites stay in S1 PK order inside each group.
        key = midx.astype(np.int64) * n_tz + tzc
        order = np.argsort(key, kind="stable")
        key = key[order]
        self.offsets = _segments(key)
        self.seg_keys = key[self.offsets[:-1]]
        w = w[order]
        mass = np.add.reduceat(w, self.offsets[:-1]) if w.size else np.zeros(0)
        if np.any(mass <= 0):
            s = int(np.flatnonzero(mass <= 0)[0])
            m, g = merchants[self.seg_keys[s] // n_tz], tz_cats[int(self.seg_keys[s] % n_tz)]
            raise EngineError("s1_site_weights", f"merchant_id={m}, tz_group_id={g}", "tz group has zero total site weight")
        # The alias law normalises each segment, so the restricted weights give the within-group
        # distribution p_weight / (group mass) without a second normalisation here.
        self.q, self.alias = alias.build_many(w, self.offsets)

        picked = sites[order]
        self.site_id = site_ids(picked["merchant_id"].to_list(), picked["legal_country_iso"].to_list(),
                                picked["site_order"].to_list())
        self.iso = picked["legal_country_iso"]
        self.site_order = picked["site_order"].to_numpy()
        self.n_tz = n_tz


class _Mixes:
    """Every S4 merchant-day mix (groups in tzid order), as segments of one flat alias table."""

    def __init__(self, s4: pl.DataFrame, merchants: np.ndarray, tz_cats: pl.Series, sites: _Sites):
        n_tz = tz_cats.len()
        mid = s4["merchant_id"].cast(pl.UInt64).to_numpy()
        pos = np.searchsorted(merchants, mid)
        known = (pos < merchants.size) & (merchants[np.minimum(pos, merchants.size - 1)] == mid) if merchants.size \
            else np.zeros(mid.size, dtype=bool)
        if not known.all():
            r = int(np.flatnonzero(~known)[0])
            raise EngineError("s4_group_weights", f"merchant_id={mid[r]}", "merchant has S4 rows but no S1 sites")
        day = _day_numbers(s4["utc_day"], "s4_group_weights")
        tzc = s4["tz_group_id"].cast(pl.String).cast(pl.Enum(tz_cats)).to_physical().to_numpy().astype(np.int64)
        p = s4["p_group"].cast(pl.Float64).to_numpy()

        self.day_min = int(day.min()) if day.size else 0
        self.span = int(day.max()) - self.day_min + 1 if day.size else 1
        md = pos.astype(np.int64) * self.span + (day - self.day_min)
        key = md * n_tz + tzc
        order = np.argsort(key, kind="stable")  # S4 already in PK order: a presorted run is cheap
        key = key[order]
        if key.size > 1 and np.any(key[1:] == key[:-1]):
            r = int(order[np.flatnonzero(key[1:] == key[:-1])[0]])
            raise EngineError("s4_group_weights", f"row {r}", f"duplicate (merchant_id, utc_day, tz_group_id): {s4.row(r)[:3]}")
        p = p[order]
        if not np.all(np.isfinite(p) & (p >= 0)):
            r = int(order[np.flatnonzero(~(np.isfinite(p) & (p >= 0)))[0]])
            raise EngineError("s4_group_weights", f"row {r}", f"p_group must be finite and >= 0, got {s4['p_group'][r]!r}")

        md = md[order]
        self.offsets = _segments(md)
        self.md_keys = md[self.offsets[:-1]]
        sums = np.add.reduceat(p, self.offsets[:-1]) if p.size else np.zeros(0)
        bad = np.flatnonzero(np.abs(sums - 1.0) > MASS_TOL)
        if bad.size:
            s = int(bad[0])
            raise EngineError("s4_group_weights", self._name(s, merchants),
                              f"p_group sums to {sums[s]!r}, not 1 within {MASS_TOL} ({bad.size} merchant-day(s) off)")

        # Every group S4 can pick must have a site table, so the site pick can never miss.
        group_key = pos[order].astype(np.int64) * n_tz + tzc[order]
        at = np.minimum(np.searchsorted(sites.seg_keys, group_key), max(sites.seg_keys.size - 1, 0))
        has = (sites.seg_keys[at] == group_key) if sites.seg_keys.size else np.zeros(group_key.size, dtype=bool)
        if not has.all():
            r = int(order[np.flatnonzero(~has)[0]])
            raise EngineError("s4_group_weights", f"merchant_id={mid[r]}, tz_group_id={tz_cats[int(tzc[r])]}",
                              "S4 group has no site with that tzid in s1_site_weights/site_timezones")

        self.q, self.alias = alias.build_many(p, self.offsets)
        self.p = p
        self.tzc = tzc[order]

    def _name(self, seg: int, merchants: np.ndarray) -> str:
        m, d = divmod(int(self.md_keys[seg]), self.span)
        return f"merchant_id={merchants[m]}, utc_day={_day_text(d + self.day_min)}"


# --------------------------------------------------------------------------------------------
# routing


def _route_shard(m0: int, m1: int, midx, mid, seq, day, mixes: _Mixes, sites: _Sites, stream: Stream):
    """Group and site picks for one merchant shard; returns (S4 row, site row) per arrival."""
    # merchant-day segment of each arrival; days outside S4's grid map to "missing"
    md_table = _dense_lookup(mixes.md_keys, m0 * mixes.span, m1 * mixes.span)
    off = day - mixes.day_min
    inside = (off >= 0) & (off < mixes.span)
    seg = np.where(inside, md_table[(midx - m0) * mixes.span + np.where(inside, off, 0)], -1)
    if np.any(seg < 0):
        r = int(np.flatnonzero(seg < 0)[0])
        raise EngineError("s4_group_weights", f"merchant_id={mid[r]}, utc_day={_day_text(day[r])}",
                          "arrival has no S4 group mix for its merchant-day")

    site_table = _dense_lookup(sites.seg_keys, m0 * sites.n_tz, m1 * sites.n_tz)
    s4_row = np.empty(mid.size, dtype=np.int64)
    site_row = np.empty(mid.size, dtype=np.int64)
    # Blocks of arrivals keep the Philox and alias-decode temporaries in cache (see
    # blocked_uniforms); every value depends only on its own arrival, so blocking is invisible.
    for b0 in range(0, mid.size, BLOCK):
        b = slice(b0, b0 + BLOCK)
        m, lo = mid[b], seq[b] * np.uint64(2)
        g = mixes.offsets[seg[b]] + alias.sample_many(mixes.q, mixes.alias, mixes.offsets, seg[b], stream.uniforms(m, lo))
        site_seg = site_table[(midx[b] - m0) * sites.n_tz + mixes.tzc[g]]
        u2 = stream.uniforms(m, lo + np.uint64(1))
        site_row[b] = sites.offsets[site_seg] + alias.sample_many(sites.q, sites.alias, sites.offsets, site_seg, u2)
        s4_row[b] = g
    return s4_row, site_row


def _trace_row(label: str, mid: np.ndarray, lo_first: int, lo_last: int) -> dict:
    """Totals of one substream plus its first counter (before, first event) and last counter
    (after, last event), events taken in the logs' (merchant_id, arrival_seq) order."""
    n = int(mid.size)
    return {
        "module": MODULE, "substream_label": label, "events": n, "draws": n, "blocks": n,
        "first_counter_hi": int(mid[0]) if n else 0, "first_counter_lo": lo_first if n else 0,
        "last_counter_hi": int(mid[-1]) if n else 0, "last_counter_lo": lo_last if n else 0,
    }


TRACE_SCHEMA = {"module": pl.String, "substream_label": pl.String, "events": pl.UInt64, "draws": pl.UInt64,
                "blocks": pl.UInt64, "first_counter_hi": pl.UInt64, "first_counter_lo": pl.UInt64,
                "last_counter_hi": pl.UInt64, "last_counter_lo": pl.UInt64}


SHARDED = True  # every draw is keyed by merchant_id: merchant shards give the same events


def run(inputs: dict, policies: dict, ctx: Context) -> dict[str, pl.DataFrame]:
    return run_whole(run_shard, finish, inputs, policies, ctx)


def finish(inputs: dict, policies: dict, ctx: Context, parts: list[dict]) -> dict:
    return {"rng_trace_s5": merge_traces([p["trace"] for p in parts]),
            "_report": merge_reports([p["report"] for p in parts], same=("shard_merchants",))}


def run_shard(inputs: dict, policies: dict, ctx: Context) -> dict[str, pl.DataFrame]:
    policy = policies["route_rng_policy_v1"].data
    shard_merchants = int(policy.get("shard_merchants", DEFAULT_SHARD_MERCHANTS))
    roster = inputs["s5_arrival_roster"]
    s4, s1, tz = inputs["s4_group_weights"], inputs["s1_site_weights"], inputs["site_timezones"]

    merchants = np.unique(s1["merchant_id"].cast(pl.UInt64).to_numpy())
    # One code per tzid, in sorted (byte) order, shared by S4 groups and site time zones, so that
    # "groups in tzid order" is integer order and a group joins its sites by integer key.
    tz_cats = pl.concat([tz["tzid"].cast(pl.String), s4["tz_group_id"].cast(pl.String)]).unique().sort()
    sites = _Sites(s1, tz, merchants, tz_cats)
    mixes = _Mixes(s4, merchants, tz_cats, sites)

    # Dense merchant index of each arrival (hash join: far cheaper than a binary search per row).
    n = roster.height
    r_mid = roster["merchant_id"].cast(pl.UInt64)
    lookup = pl.DataFrame({"merchant_id": merchants, "midx": np.arange(merchants.size, dtype=np.int64)})
    midx_col = r_mid.to_frame().join(lookup, on="merchant_id", how="left", maintain_order="left")["midx"]
    if midx_col.null_count():
        r = int(midx_col.is_null().arg_max())
        raise EngineError("s5_arrival_roster", f"merchant_id={r_mid[r]}, utc_day={roster['utc_day'][r]}",
                          f"arrival of a merchant unknown to s1_site_weights ({midx_col.null_count()} arrival(s))")
    midx = midx_col.to_numpy()
    day_run, run_text, run_day = _day_runs(roster["utc_day"], "s5_arrival_roster")

    # (merchant, roster position) order: a stable sort on the merchant index. numpy sorts 16-bit
    # keys with a radix sort, several times faster than a comparison sort, so use it when it fits.
    sort_key = midx.astype(np.uint16 if merchants.size <= 1 << 16 else np.uint32)
    order = np.argsort(sort_key, kind="stable")
    midx = midx[order]
    first = np.zeros(merchants.size + 1, dtype=np.int64)
    np.cumsum(np.bincount(midx, minlength=merchants.size), out=first[1:])
    seq = (np.arange(n, dtype=np.int64) - first[midx]).astype(np.uint64)
    mid = merchants[midx]
    day_run = day_run[order]
    day = run_day[day_run]

    stream = Stream(ctx.draws_of, ctx.seed, STREAM_S5)
    s4_rows, site_rows, shards = [], [], 0
    for m0 in range(0, merchants.size, shard_merchants):
        m1 = min(m0 + shard_merchants, merchants.size)
        a0, a1 = int(first[m0]), int(first[m1])
        if a0 == a1:
            continue
        shards += 1
        g, s = _route_shard(m0, m1, midx[a0:a1], mid[a0:a1], seq[a0:a1], day[a0:a1], mixes, sites, stream)
        s4_rows.append(g)
        site_rows.append(s)
    s4_row = np.concatenate(s4_rows) if s4_rows else np.zeros(0, dtype=np.int64)
    site_row = np.concatenate(site_rows) if site_rows else np.zeros(0, dtype=np.int64)

    # ---- outputs, all in (merchant_id, arrival_seq) order
    lo = seq * np.uint64(2)
    one = np.uint64(1)
    mid_s = pl.Series("merchant_id", mid, dtype=pl.UInt64)
    seq_s = pl.Series("arrival_seq", seq, dtype=pl.UInt64)
    utc_day = run_text.gather(day_run).alias("utc_day")
    group_tz = tz_cats.gather(mixes.tzc[s4_row]).alias("tz_group_id")
    ones = constant_column("draws", 1, n, pl.UInt32)

    def counters(before_lo: np.ndarray) -> list[pl.Series]:
        return [mid_s.alias("rng_counter_before_hi"), pl.Series("rng_counter_before_lo", before_lo, dtype=pl.UInt64),
                mid_s.alias("rng_counter_after_hi"), pl.Series("rng_counter_after_lo", before_lo + one, dtype=pl.UInt64),
                ones, ones.alias("blocks")]

    group_events = pl.DataFrame([
        constant_column("module", MODULE, n, pl.String), constant_column("substream_label", SUB_GROUP, n, pl.String),
        mid_s, seq_s, utc_day, group_tz, pl.Series("p_group", mixes.p[s4_row], dtype=pl.Float64), *counters(lo),
    ])
    site_iso = sites.iso.gather(site_row).alias("legal_country_iso")
    site_id = pl.Series("site_id", sites.site_id[site_row], dtype=pl.UInt64)
    site_order = pl.Series("site_order", sites.site_order[site_row], dtype=pl.Int32)
    site_events = pl.DataFrame([
        constant_column("module", MODULE, n, pl.String), constant_column("substream_label", SUB_SITE, n, pl.String),
        mid_s, seq_s, utc_day, group_tz, site_id, site_iso, site_order, *counters(lo + one),
    ])
    last = int(seq[-1]) * 2 if n else 0
    trace = pl.DataFrame([_trace_row(SUB_GROUP, mid, 0, last + 1), _trace_row(SUB_SITE, mid, 1, last + 2)],
                         schema=TRACE_SCHEMA)

    out = {"rng_event_alias_pick_group": group_events, "rng_event_alias_pick_site": site_events}
    if policy.get("selection_log", False):
        out["s5_selection_log"] = pl.DataFrame([
            mid_s, seq_s, roster["utc_timestamp"].cast(pl.String).gather(order).alias("utc_timestamp"), utc_day,
            group_tz, site_id, site_iso, site_order,
        ])
    out["_part"] = {"trace": trace, "report": {
        "arrivals": n, "shards": shards, "shard_merchants": shard_merchants,
        "group_tables": int(mixes.md_keys.size), "site_tables": int(sites.seg_keys.size)}}
    return out
