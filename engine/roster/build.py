"""The builder: activity, counts, zones and instants of every merchant-day (the law in __init__)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from ..calendar import day_bounds, day_string, holiday_table, local_days, tz_offsets, weekday_of, weekday_role_shift
from ..errors import EngineError
from ..rng import STREAM_ROSTER, Stream, poisson_counts
from .card import _card_from_counts, _law_card
from .clock import _format_timestamps, _groups_and_ranks, _quarter_cdf_table, _unique_times
from .layout import (
    CDF_BITS,
    DATASET_ID,
    DAY_SHIFT,
    DAY_US,
    MAX_ARRIVALS_PER_DAY,
    MAX_MERCHANT_DAYS,
    POLICY_NAME,
    QUARTER_US,
    QUARTERS,
    ROW_SHIFT,
    SLOT_ACTIVE,
    SLOT_ARRIVAL0,
    SLOT_COUNT,
    SLOT_COUNT_NORMAL,
)
from .validate import validate_roster
from .volume import _horizon, _merchant_table, _pick_zones, _volumes, merchant_zones, profiles


def build_roster(merchants: pl.DataFrame, site_timezones: pl.DataFrame, policy: Any, day_range: tuple[str, str],
                 draws_of: str, seed: int, holiday_effects: dict | None = None) -> tuple[pl.DataFrame, dict]:
    """The arrival roster (contract columns, sorted by (utc_timestamp, merchant_id)) and its card.

    `policy` is the `roster_policy_v1` document (a dict, or a loaded `Policy`); `day_range` the S3
    day grid (inclusive YYYY-MM-DD bounds). Pure function of its arguments: no clock, no I/O.
    """
    roster, part = build_roster_shard(merchants, site_timezones, policy, day_range, draws_of, seed, holiday_effects)
    return roster, card_of_parts([part], merchants, policy, day_range)


def build_roster_shard(
    merchants: pl.DataFrame,
    site_timezones: pl.DataFrame,
    policy: Any,
    day_range: tuple[str, str],
    draws_of: str,
    seed: int,
    holiday_effects: dict | None = None,
) -> tuple[pl.DataFrame, dict]:
    """The roster of some merchants and the counts its card needs (see `card_of_parts`).

    `holiday_effects`: merchant class -> log-effect on volume of a public holiday of the home
    country ("default" for the rest), the table S3 applies to the mix (engine.calendar).

    Every draw is keyed by merchant_id, so the roster of a set of merchants is the same whether
    they are built together or in shards: the union of shard rosters, re-sorted by
    (utc_timestamp, merchant_id), is the roster of the whole set.
    """
    policy = getattr(policy, "data", policy)
    grid = day_bounds(day_range, POLICY_NAME)
    h_start, h_end = _horizon(policy, grid)
    n_days = h_end - h_start + 1
    # A horizon shorter than min_active_days (the one-day negative control) makes every day active;
    # PRE-01 then judges the horizon, which is the point of such a roster.
    min_active = min(int(policy["min_active_days"]), n_days)
    floor_n = int(policy["min_arrivals_per_active_day"])
    rate_pol = policy["rate"]

    mt = _merchant_table(merchants, site_timezones)
    n_m = mt.height
    if n_m * n_days >= MAX_MERCHANT_DAYS:
        raise EngineError(POLICY_NAME, "(scale)", f"{n_m * n_days} merchant-days exceed one shard's limit {MAX_MERCHANT_DAYS}")
    mid = mt["merchant_id"].to_numpy().astype(np.uint64)
    classes = mt["merchant_class"].unique().sort().to_list()
    profile_of_class, base_rate, weekday_mult, intraday, defaulted = profiles(policy, classes)
    profile_of = mt["merchant_class"].replace_strict(profile_of_class, return_dtype=pl.Int64).to_numpy()
    zones = merchant_zones(site_timezones, mt["merchant_id"])
    tzids = sorted(set(zones["tzid"].to_list()) | set(mt["home_tzid"].to_list()))
    tz_index = {t: i for i, t in enumerate(tzids)}
    tz_of = np.array([tz_index[t] for t in mt["home_tzid"].to_list()], dtype=np.int64)  # home zone
    zone_tz = np.array([tz_index[t] for t in zones["tzid"].to_list()], dtype=np.int64)
    zone_start, zone_count = zones["start"].to_numpy(), zones["zones"].to_numpy()

    epoch_days = np.arange(h_start, h_end + 1, dtype=np.int64)
    day_lo = epoch_days.astype(np.uint64) << np.uint64(DAY_SHIFT)
    offsets = tz_offsets(tzids, h_start, n_days)
    cdf_keys, pattern_of, n_patterns = _quarter_cdf_table(offsets, intraday)
    # the home zone's local date at 12:00 UTC; its weekday plays the role engine.calendar gives it
    # for the home country's weekend (the same rotation S3 applies), and its public holidays
    local_day = local_days(offsets[:, :, QUARTERS // 2], epoch_days[None, :])  # (tz, day)
    countries, country_of = np.unique(mt["home_country_iso"].to_numpy().astype(str), return_inverse=True)
    shift = np.array([weekday_role_shift(c) for c in countries], dtype=np.int64)
    holidays = holiday_table(countries.tolist(), h_start, n_days)

    stream = Stream(draws_of, seed, STREAM_ROSTER)
    hi_grid = np.broadcast_to(mid[:, None], (n_m, n_days))

    # activity: inactive when u < p; the min_active_days largest u of a merchant are always active
    u_active = stream.uniforms(hi_grid, day_lo[None, :] | np.uint64(SLOT_ACTIVE)).reshape(n_m, n_days)
    active = u_active >= float(policy["inactive_day_prob"])
    short = np.flatnonzero(active.sum(axis=1) < min_active)
    if short.size:
        top = np.argsort(-u_active[short], axis=1, kind="stable")[:, :min_active]
        active[short[:, None], top] = True
    m_idx, d_idx = np.nonzero(active)  # merchant-major, day-minor: the generation order

    # count: N = floor + Poisson(rate), rate = scale x class base x weekday x holiday x volume
    volume = _volumes(stream, mid, mt["n_sites"].to_numpy().astype(np.int64), rate_pol)
    p_of = profile_of[m_idx]
    home_day = local_day[tz_of[m_idx], d_idx]
    wd = (weekday_of(home_day) + shift[country_of[m_idx]]) % 7
    on_holiday = holidays[country_of[m_idx], home_day - (h_start - 1)]
    effect = np.array([float(holiday_effects.get(c, holiday_effects.get("default", 0.0))) if holiday_effects else 0.0
                       for c in mt["merchant_class"].to_list()])
    rate = (float(rate_pol["rate_scale"]) * base_rate[p_of] * weekday_mult[p_of, wd] * volume[m_idx]
            * np.where(on_holiday, np.exp(effect[m_idx]), 1.0))
    rate_cap = float(rate_pol["rate_cap"])
    n_capped = int((rate > rate_cap).sum())
    rate = np.minimum(rate, rate_cap)
    md_hi, md_lo = mid[m_idx], day_lo[d_idx]
    u_count = stream.uniforms(md_hi, md_lo | np.uint64(SLOT_COUNT))
    extra, n_normal = poisson_counts(
        rate, u_count,
        lambda mask: stream.normals(md_hi[mask], md_lo[mask] | np.uint64(SLOT_COUNT_NORMAL)),
        float(policy["poisson"]["normal_threshold"]),
    )
    counts = floor_n + extra
    if counts.size and int(counts.max()) > MAX_ARRIVALS_PER_DAY:
        raise EngineError(POLICY_NAME, "/rate/rate_cap",
                          f"a merchant-day drew {int(counts.max())} arrivals; the counter layout holds {MAX_ARRIVALS_PER_DAY}")

    # arrivals: the zone of the merchant's sites whose local day the arrival follows (a draw by
    # site counts; one-zone merchants draw nothing), then one Philox block: word 0 picks the quarter
    # hour from that zone's local profile, word 1 the microsecond in it. So a merchant's intraday
    # cycle is the mixture of its zones' local cycles (docs/world.md).
    group, j = _groups_and_ranks(counts)
    a_m, a_d = m_idx[group], d_idx[group]
    if policy.get("intraday_clock", "zones") == "zones":
        a_zone = _pick_zones(stream, mid, a_m, day_lo[a_d], j, zone_start, zone_count, zones["sites"].to_numpy())
        zone_tz_of_arrival = zone_tz[a_zone]
    else:  # every arrival on the home zone's clock (the negative control of local-time coherence)
        zone_tz_of_arrival = tz_of[a_m]
    u_q, u_us = stream.uniform_pairs(mid[a_m], day_lo[a_d] + np.uint64(SLOT_ARRIVAL0) + j.astype(np.uint64))
    row = (profile_of[a_m] * n_patterns + pattern_of[zone_tz_of_arrival, a_d]).astype(np.uint64)
    u_int = np.floor(u_q * float(1 << CDF_BITS)).astype(np.uint64)  # exact: scaling by a power of two
    pos = np.searchsorted(cdf_keys, (row << np.uint64(ROW_SHIFT)) | u_int, side="right").astype(np.int64)
    quarter = pos - row.astype(np.int64) * QUARTERS
    tod = quarter * QUARTER_US + np.floor(u_us * QUARTER_US).astype(np.int64)

    # uniqueness inside each merchant-day (days never overlap, so this is uniqueness per merchant)
    bumped, n_bumped = _unique_times(tod, group, j, counts)
    ts_us = epoch_days[a_d] * DAY_US + bumped  # a_m, a_d are constant inside a group: the sort leaves them

    # final order (utc_timestamp, merchant_id): the arrays are merchant-major in ascending
    # merchant_id, so a stable sort on the instant breaks ties by merchant_id (and merges the
    # already sorted per-merchant runs cheaply); fixed-width strings then sort like the instants
    final = np.argsort(ts_us, kind="stable")
    a_m, a_d, ts_us = a_m[final], a_d[final], ts_us[final]
    day_strings = pl.Series([day_string(int(d)) for d in epoch_days], dtype=pl.String)
    idx_m = pl.Series(a_m.astype(np.uint32))
    roster = pl.DataFrame({
        "merchant_id": pl.Series(mid[a_m], dtype=pl.UInt64),
        "utc_timestamp": _format_timestamps(ts_us, epoch_days),
        "utc_day": day_strings.gather(pl.Series(a_d.astype(np.uint32))),
        "is_virtual": mt["is_virtual"].gather(idx_m),
        "merchant_class": mt["merchant_class"].gather(idx_m),
        "channel": mt["channel"].gather(idx_m),
    })
    roster = validate_roster(roster, merchants, day_range, f"{DATASET_ID} (built by engine/roster.py)")

    # what the card needs, as exact integers so that shard parts add up to the whole
    per_day = pl.DataFrame({"merchant_id": pl.Series(mid[m_idx], dtype=pl.UInt64),
                            "utc_day": day_strings.gather(pl.Series(d_idx.astype(np.uint32))),
                            "len": pl.Series(counts, dtype=pl.UInt32)})
    part = {
        "per_day": per_day,
        "horizon": (h_start, h_end),
        "min_active": min_active,
        "merchant_days": int(active.size),
        "active_merchant_days": int(active.sum()),
        "weekday_arrivals": np.bincount(wd, weights=counts, minlength=7).astype(np.int64),  # exact below 2^53
        "weekday_days": np.bincount(wd, minlength=7).astype(np.int64),
        "defaulted": set(defaulted),
        "n_normal": n_normal,
        "n_capped": n_capped,
        "n_bumped": n_bumped,
        "tzids": set(tzids),
    }
    return roster, part


def card_of_parts(parts: list[dict], merchants: pl.DataFrame, policy: Any, day_range: tuple[str, str]) -> dict:
    """The built roster's card from the parts of its shards (one part: the whole roster)."""
    policy = getattr(policy, "data", policy)
    per_day = pl.concat([p["per_day"] for p in parts]) if parts else pl.DataFrame(
        schema={"merchant_id": pl.UInt64, "utc_day": pl.String, "len": pl.UInt32})
    from ..calendar import calendar_coverage

    calendar = calendar_coverage(merchants["home_country_iso"].cast(pl.String).unique().to_list())
    return _card_from_counts(per_day, merchants, day_range) | _law_card(policy, parts) | {"calendar": calendar}
