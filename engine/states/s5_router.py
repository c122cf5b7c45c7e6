"""S5 router: every arrival of the roster picks a tz group, then a site inside that group.

Law (docs/states.md, "S5 router"; docs/architecture.md, "RNG law"):
- k = arrival_seq = the arrival's 0-based ordinal among its merchant's arrivals in roster order.
- Group pick (local-time coherence): u1 = uniform at counter (merchant_id, 2k) of
  stream `2B.S5.routing`, inverse CDF over the merchant-day's groups in tzid order with
      P(g | arrival i) = p_g c_g a_g(q_i) / sum_h p_h c_h a_h(q_i),
  p_g the S4 mix of (merchant, utc_day), a_g(q) the merchant class's intraday activity in group g's
  LOCAL time at the arrival's UTC quarter hour q (the roster's law, `roster.quarter_activity`), and
  c_g > 0 the scaling (iterative proportional fitting) that makes the day's expected shares exactly
  the S4 mix: the mean over the day's arrivals of P(g | i) equals p_g for every group. So a site far
  from the merchant's home takes its traffic in its own daytime, and each merchant-day's expected
  group shares stay p_group (the S4 contract), whatever the roster's times (built or a user's).
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

from .. import alias, roster
from ..calendar import checked_epoch_days, tz_offsets
from ..context import Context
from ..errors import EngineError
from ..identity import site_ids
from ..rng import STREAM_S5, Stream
from ..shards import merge_reports, merge_traces, run_whole

READS = ("s5_arrival_roster", "s4_group_weights", "s1_site_weights", "site_timezones", "merchants")
POLICIES = ("route_rng_policy_v1", "roster_policy_v1")
WRITES = ("rng_event_alias_pick_group", "rng_event_alias_pick_site", "rng_trace_s5", "s5_selection_log")

MODULE = "2B.S5.router"
SUB_GROUP = "alias_pick_group"
SUB_SITE = "alias_pick_site"
SITE_PK = ["merchant_id", "legal_country_iso", "site_order"]
MASS_TOL = 1e-9  # sum-to-one tolerance of an S4 merchant-day (docs/states.md, S4)
FIT_TOL = 1e-10  # the proportional fit stops when every group's expected share is p_g within this (relative)
FIT_MAX_ITER = 1000
FIT_WAVE = 6  # fitting steps between two cuts of the problem down to its unsettled merchant-days
DEFAULT_SHARD_MERCHANTS = 4096


# --------------------------------------------------------------------------------------------
# small helpers


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
    return run, text, checked_epoch_days(text, where)


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


def _quarters(timestamps: pl.Series) -> np.ndarray:
    """UTC quarter hour (0..95) of RFC 3339 timestamps 'YYYY-MM-DDTHH:MM:SS.ffffffZ'."""
    ts = timestamps.cast(pl.String)
    hours = ts.str.slice(11, 2).cast(pl.Int64, strict=False)
    minutes = ts.str.slice(14, 2).cast(pl.Int64, strict=False)
    q = (hours * 4 + minutes // 15).to_numpy()
    if (hours.null_count() or minutes.null_count()) or np.any((q < 0) | (q > 95)):
        raise EngineError("s5_arrival_roster", "utc_timestamp", "not RFC 3339 'YYYY-MM-DDTHH:MM:SS.ffffffZ'")
    return q.astype(np.int64)


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
        day = checked_epoch_days(s4["utc_day"], "s4_group_weights")
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


class _Activity:
    """The intraday law per (merchant, tz group, day, UTC quarter): the merchant class's profile in
    the group's local time (roster_policy_v1, `roster.quarter_activity`)."""

    def __init__(self, roster_policy: dict, merchants_table: pl.DataFrame, merchants: np.ndarray, tz_cats: pl.Series,
                 mixes: _Mixes):
        facts = pl.DataFrame({"merchant_id": pl.Series(merchants, dtype=pl.UInt64)}).join(
            merchants_table.select(pl.col("merchant_id").cast(pl.UInt64), pl.col("merchant_class").cast(pl.String)),
            on="merchant_id", how="left", maintain_order="left")
        if facts["merchant_class"].null_count():
            r = int(facts["merchant_class"].is_null().arg_max())
            raise EngineError("merchants", f"merchant_id={merchants[r]}", "merchant of s1_site_weights has no merchants row")
        classes = facts["merchant_class"].to_list()
        profile_of_class, _, _, intraday, _ = roster.profiles(roster_policy, sorted(set(classes)))
        self.profile = np.array([profile_of_class[c] for c in classes], dtype=np.int64)
        offsets = tz_offsets(tz_cats.to_list(), mixes.day_min, mixes.span)
        self.shares, self.pattern_of, self.n_patterns = roster.quarter_activity(offsets, intraday)
        self.local_time = True


def _fit_scales(p_e, a_e, group_e, arrival_e, weight_e, p_group, seg_of_group, group_start, arrivals_of_group):
    """c per group (dense numbering): for every merchant-day, the mean over its arrivals of
    P(g | i) equals p_g. Entries are (cell, group) pairs, a cell the arrivals of one merchant-day in
    one quarter hour (they share every P(g | i)), `weight_e` its number of arrivals.

    Iterative proportional fitting, one scaling per group: c_g <- c_g p_g / E_g. Each merchant-day
    stops on its own (all its groups within FIT_TOL), so a value never depends on which other
    merchant-days share the shard, and every sum runs in arrival order inside one merchant-day.
    Most merchant-days settle in a few steps and a few take many (groups whose local profiles
    nearly coincide), so the work runs in waves: a few steps on every unsettled merchant-day, then
    the problem is cut down to the ones still unsettled."""
    c = np.ones(p_group.size)
    iterations = np.zeros(group_start.size, dtype=np.int64)
    seg_of_entry = seg_of_group[group_e]
    segs = np.arange(group_start.size)  # unsettled merchant-days, as indices into the full problem
    entries = np.arange(p_e.size)
    groups = np.arange(p_group.size)
    remap = np.empty(p_group.size, dtype=np.int64)  # full group index -> index in the current sub-problem
    alive = np.ones(group_start.size, dtype=bool)
    while segs.size and iterations.max() < FIT_MAX_ITER:
        remap[groups] = np.arange(groups.size)
        g_local = remap[group_e[entries]]
        arrival = arrival_e[entries]
        new_arrival = np.r_[True, arrival[1:] != arrival[:-1]]
        starts = np.flatnonzero(new_arrival)
        arrival_local = np.cumsum(new_arrival) - 1
        pe, ae, we = p_e[entries], a_e[entries], weight_e[entries]
        pg, ag = p_group[groups], arrivals_of_group[groups]
        seg_local = np.cumsum(np.r_[True, seg_of_group[groups][1:] != seg_of_group[groups][:-1]]) - 1
        gstart = np.flatnonzero(np.r_[True, seg_local[1:] != seg_local[:-1]])
        cl = c[groups]
        active = np.ones(segs.size, dtype=bool)
        for _ in range(FIT_WAVE):
            num = pe * cl[g_local] * ae
            prob = num / np.add.reduceat(num, starts)[arrival_local]
            expected = np.bincount(g_local, weights=prob * we, minlength=groups.size) / ag
            ratio = pg / expected
            step = active & (np.maximum.reduceat(np.abs(ratio - 1.0), gstart) > FIT_TOL)
            if not step.any():
                active = step
                break
            cl *= np.where(step[seg_local], ratio, 1.0)
            iterations[segs] += step
            active = step
        c[groups] = cl
        alive[segs[~active]] = False
        segs = segs[active]
        entries = entries[alive[seg_of_entry[entries]]]
        groups = groups[alive[seg_of_group[groups]]]
    return c, int(segs.size), int(iterations.max()) if iterations.size else 0


def _pick_groups(seg, quarter, day_off, midx, u, mixes: _Mixes, act: _Activity):
    """S4 row of each arrival's group: inverse CDF of P(g | i) (module docstring) over the
    merchant-day's groups in tzid order. Returns (rows, merchant-days not converged, iterations).

    Groups of one merchant-day whose zones keep the same clock that day (Paris and Berlin) have the
    same activity at every instant, so the fit runs over those blocks of groups (their p summed) and
    a group's probability is its block's times its share of the block: P(g | i) = p_g c_b a_b(q_i) /
    sum_b' p_b' c_b' a_b'(q_i). A merchant-day with one block needs no fit (c = 1: P(g | i) = p_g)."""
    n_g = (mixes.offsets[seg + 1] - mixes.offsets[seg]).astype(np.int64)
    out = mixes.offsets[seg].astype(np.int64).copy()
    multi = np.flatnonzero(n_g > 1)
    if multi.size == 0:
        return out, 0, 0
    c_row = np.ones(mixes.p.size)  # the fitted scale of each S4 row's block (1: no fit needed)
    # -- blocks: (merchant-day, clock pattern) among the merchant-days of these arrivals
    segs, seg_inv = np.unique(seg[multi], return_inverse=True)
    seg_day = (mixes.md_keys[segs] % mixes.span).astype(np.int64)
    groups_per_seg = (mixes.offsets[segs + 1] - mixes.offsets[segs]).astype(np.int64)
    seg_of_row = np.repeat(np.arange(segs.size), groups_per_seg)
    first_row_of_seg = np.repeat(np.cumsum(groups_per_seg) - groups_per_seg, groups_per_seg)
    rows = np.repeat(mixes.offsets[segs], groups_per_seg) + (np.arange(seg_of_row.size) - first_row_of_seg)
    pattern_row = act.pattern_of[mixes.tzc[rows], seg_day[seg_of_row]]
    blocks, block_of_row = np.unique(seg_of_row * act.n_patterns + pattern_row, return_inverse=True)
    seg_of_block, pattern_block = blocks // act.n_patterns, blocks % act.n_patterns
    blocks_per_seg = np.bincount(seg_of_block, minlength=segs.size)
    fitted = blocks_per_seg[seg_of_block] > 1
    unconverged = iterations = 0
    if fitted.any():
        # cells: the arrivals of a merchant-day with two blocks or more that share a quarter hour
        # (they share every probability), counted; entries: every (cell, block of its merchant-day)
        arrivals = np.flatnonzero(blocks_per_seg[seg_inv] > 1)  # into multi
        cell_keys, first_arrival, cell_n = np.unique(seg_inv[arrivals] * 96 + quarter[multi[arrivals]],
                                                     return_index=True, return_counts=True)
        cell_seg, cell_q = cell_keys // 96, cell_keys % 96
        counts = blocks_per_seg[cell_seg]
        arr = np.repeat(np.arange(cell_keys.size), counts)
        first_block = np.cumsum(blocks_per_seg) - blocks_per_seg
        block_e = first_block[cell_seg][arr] + (np.arange(arr.size) - np.repeat(np.cumsum(counts) - counts, counts))
        merchant_of_cell = midx[multi[arrivals[first_arrival]]]
        a_e = act.shares[act.profile[merchant_of_cell[arr]] * act.n_patterns + pattern_block[block_e], cell_q[arr]]
        p_block = np.bincount(block_of_row, weights=mixes.p[rows], minlength=blocks.size)
        # dense numbering of the fitted blocks and their merchant-days
        fit_blocks = np.flatnonzero(fitted)
        dense = np.full(blocks.size, -1, dtype=np.int64)
        dense[fit_blocks] = np.arange(fit_blocks.size)
        fit_segs, seg_dense = np.unique(seg_of_block[fit_blocks], return_inverse=True)
        group_start = np.flatnonzero(np.r_[True, seg_dense[1:] != seg_dense[:-1]])
        arrivals_of_block = np.bincount(seg_inv[arrivals], minlength=segs.size)[seg_of_block[fit_blocks]]
        c, unconverged, iterations = _fit_scales(p_block[block_e], a_e, dense[block_e], arr, cell_n[arr].astype(np.float64),
                                                 p_block[fit_blocks], seg_dense, group_start, arrivals_of_block)
        c_block = np.ones(blocks.size)
        c_block[fit_blocks] = c
        c_row[rows] = c_block[block_of_row]
    # -- inverse CDF over each arrival's groups in tzid order, a running sum per arrival (two passes:
    # the total, then the first group whose partial sum exceeds u x total)
    counts = n_g[multi]
    base = mixes.offsets[seg[multi]].astype(np.int64)
    prof = act.profile[midx[multi]] * act.n_patterns
    day_m, q_m = day_off[multi], quarter[multi]

    def weight(k: int, has: np.ndarray) -> np.ndarray:
        row = base[has] + k
        return mixes.p[row] * c_row[row] * act.shares[prof[has] + act.pattern_of[mixes.tzc[row], day_m[has]], q_m[has]]

    total = np.zeros(multi.size)
    for k in range(int(counts.max())):
        has = np.flatnonzero(counts > k)
        total[has] += weight(k, has)
    target = u[multi] * total
    cum = np.zeros(multi.size)
    chosen = counts - 1  # u x total reaches no partial sum before the last: the last group
    open_ = np.ones(multi.size, dtype=bool)
    for k in range(int(counts.max()) - 1):
        has = np.flatnonzero((counts > k) & open_)
        cum[has] += weight(k, has)
        hit = has[target[has] < cum[has]]
        chosen[hit] = k
        open_[hit] = False
    out[multi] = base + chosen
    return out, unconverged, iterations


# --------------------------------------------------------------------------------------------
# routing


def _route_shard(m0: int, m1: int, midx, mid, seq, day, quarter, mixes: _Mixes, sites: _Sites, act: _Activity,
                 stream: Stream):
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
    u1 = blocked_uniforms(stream, mid, seq * np.uint64(2))
    if act.local_time:
        groups, unconverged, iterations = _pick_groups(seg, quarter, off, midx, u1, mixes, act)
    else:  # the day's mix alone, whatever the hour (the old law: T-S5-01's negative control)
        groups = mixes.offsets[seg] + alias.sample_many(mixes.q, mixes.alias, mixes.offsets, seg, u1)
        unconverged = iterations = 0
    s4_row = np.empty(mid.size, dtype=np.int64)
    site_row = np.empty(mid.size, dtype=np.int64)
    # Blocks of arrivals keep the Philox and alias-decode temporaries in cache (see
    # blocked_uniforms); every value depends only on its own arrival, so blocking is invisible.
    for b0 in range(0, mid.size, BLOCK):
        b = slice(b0, b0 + BLOCK)
        m, lo = mid[b], seq[b] * np.uint64(2)
        g = groups[b]
        site_seg = site_table[(midx[b] - m0) * sites.n_tz + mixes.tzc[g]]
        u2 = stream.uniforms(m, lo + np.uint64(1))
        site_row[b] = sites.offsets[site_seg] + alias.sample_many(sites.q, sites.alias, sites.offsets, site_seg, u2)
        s4_row[b] = g
    return s4_row, site_row, unconverged, iterations


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
            "_report": merge_reports([p["report"] for p in parts], same=("shard_merchants",),
                                     maxed=("local_time_fit_iterations",))}


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
    act = _Activity(policies["roster_policy_v1"].data, inputs["merchants"], merchants, tz_cats, mixes)
    act.local_time = policy.get("group_choice", "local_time") == "local_time"

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
    quarter = _quarters(roster["utc_timestamp"])[order]

    stream = Stream(ctx.draws_of, ctx.seed, STREAM_S5)
    s4_rows, site_rows, shards, unconverged, iterations = [], [], 0, 0, 0
    for m0 in range(0, merchants.size, shard_merchants):
        m1 = min(m0 + shard_merchants, merchants.size)
        a0, a1 = int(first[m0]), int(first[m1])
        if a0 == a1:
            continue
        shards += 1
        g, s, u_n, it = _route_shard(m0, m1, midx[a0:a1], mid[a0:a1], seq[a0:a1], day[a0:a1], quarter[a0:a1],
                                     mixes, sites, act, stream)
        unconverged, iterations = unconverged + u_n, max(iterations, it)
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
        "group_tables": int(mixes.md_keys.size), "site_tables": int(sites.seg_keys.size),
        "local_time_fit_unconverged": unconverged, "local_time_fit_iterations": iterations}}
    return out
