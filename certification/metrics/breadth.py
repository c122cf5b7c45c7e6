"""Realism breadth: merchant concentration, day-effect memory, holidays, local-time coherence."""

from __future__ import annotations

import numpy as np
import polars as pl

from ._common import _SITE_PK, _float

# --- Realism breadth: merchant size, day-effect memory, holidays, local time ---

SERIES = "_series"  # a metric's key for the lists its plot draws (scoring moves them to plot data)
NIGHT_HOURS = (0, 6)  # local 00:00-05:59
FAR_HOURS = 6  # a site whose clock is at least this many hours from the merchant's main group


def merchant_concentration(roster: pl.DataFrame) -> dict:
    """T-R-01: arrivals per merchant: Gini, top 1% and 10% shares, Hill tail exponent (top 10%)
    (the formulas are engine.roster's, which the roster card reports too)."""

    from engine.roster import concentration

    per = roster.group_by("merchant_id").len()["len"].to_numpy().astype(np.float64)
    c = concentration(per)
    return {"r_merchant_gini": c["gini"], "r_top1_share": c["top1_share"], "r_top10_share": c["top10_share"],
            "r_tail_alpha": c["tail_alpha_hill_top10"], SERIES: {"r_arrivals_per_merchant": np.sort(per)[::-1].tolist()}}


def day_effect_memory(s3: pl.DataFrame) -> dict:
    """T-S3-04: median over (merchant, tz group) of the lag-1 autocorrelation of log_gamma net of
    that pair's weekday means (UTC weekday), day by day in grid order."""
    r = s3.select("merchant_id", "tz_group_id", "utc_day", "log_gamma").with_columns(
        wd=pl.col("utc_day").str.to_date().dt.weekday()).with_columns(
        r=pl.col("log_gamma") - pl.col("log_gamma").mean().over("merchant_id", "tz_group_id", "wd"))
    c = pl.col("r") - pl.col("r").mean()
    acf = r.sort("merchant_id", "tz_group_id", "utc_day").group_by("merchant_id", "tz_group_id").agg(
        ((c * c.shift(1)).sum() / (c * c).sum()).alias("acf"))["acf"]
    return {"s3_acf1_median": _float(acf.median()), "s3_acf1_pairs": acf.len(),
            SERIES: {"s3_acf1": acf.drop_nulls().to_list()}}


def _group_country(site_timezones: pl.DataFrame) -> pl.DataFrame:
    """A merchant's tz group's country: where most of its sites in that zone are (ties: smallest ISO),
    the rule S3 uses."""
    return (site_timezones.group_by("merchant_id", "tzid", "legal_country_iso").len()
            .sort(["merchant_id", "tzid", "len", "legal_country_iso"], descending=[False, False, True, False])
            .group_by("merchant_id", "tzid", maintain_order=True).agg(pl.col("legal_country_iso").first().alias("country")))


def _local_holiday(frame: pl.DataFrame, day_col: str, tz_col: str, country_col: str) -> np.ndarray:
    """Whether each row's country has a public holiday on the local date at 12:00 UTC of its UTC day."""

    from engine.calendar import holiday_table, tz_offsets

    if frame.height == 0:
        return np.zeros(0, dtype=bool)
    days = frame[day_col].str.to_date().to_physical().to_numpy().astype(np.int64)
    first, n_days = int(days.min()), int(days.max() - days.min() + 1)
    tzs, tz_i = np.unique(frame[tz_col].to_numpy().astype(str), return_inverse=True)
    countries, c_i = np.unique(frame[country_col].to_numpy().astype(str), return_inverse=True)
    noon = tz_offsets(tzs.tolist(), first, n_days)[:, :, 48]
    table = holiday_table(countries.tolist(), first, n_days)
    d = days - first
    local = d + (43_200 + noon[tz_i, d]) // 86_400 + 1
    return table[c_i, local]


def holiday_effects(s3: pl.DataFrame, roster: pl.DataFrame, site_timezones: pl.DataFrame,
                    merchants: pl.DataFrame) -> dict:
    """T-S3-05 and T-R-02: the mean log-effect of a public holiday.

    S3: over (merchant, group, day) cells whose group's country has a holiday on that local date,
    the mean of log_gamma minus the same pair's mean over its other days. Roster: over active
    merchant-days whose home country has a holiday (local date of the zone holding most sites),
    ln(total arrivals / total of the merchant's mean arrivals on non-holiday days of the same weekday)."""

    cells = s3.select("merchant_id", "utc_day", "tz_group_id", "log_gamma").join(
        _group_country(site_timezones), left_on=["merchant_id", "tz_group_id"], right_on=["merchant_id", "tzid"],
        how="left", maintain_order="left")
    cells = cells.with_columns(hol=pl.Series(_local_holiday(cells, "utc_day", "tz_group_id", "country")))
    base = cells.filter(~pl.col("hol")).group_by("merchant_id", "tz_group_id").agg(pl.col("log_gamma").mean().alias("b"))
    hol = cells.filter(pl.col("hol")).join(base, on=["merchant_id", "tz_group_id"])
    s3_effect = _float((hol["log_gamma"] - hol["b"]).mean()) if hol.height else float("nan")
    # the home zone: the tz of most of the merchant's home-country sites (the roster's rule)
    home = (site_timezones.join(merchants.select("merchant_id", "home_country_iso"), on="merchant_id")
            .with_columns(at_home=pl.col("legal_country_iso") == pl.col("home_country_iso"))
            .group_by("merchant_id", "tzid").agg(pl.col("at_home").sum().alias("h"), pl.len().alias("n"))
            .sort(["merchant_id", "h", "n", "tzid"], descending=[False, True, True, False])
            .group_by("merchant_id", maintain_order=True).agg(pl.col("tzid").first().alias("home_tz")))
    md = (roster.group_by("merchant_id", "utc_day").len()
          .join(home, on="merchant_id", how="left").join(merchants.select("merchant_id", "home_country_iso"), on="merchant_id",
                                                          how="left"))
    md = md.with_columns(hol=pl.Series(_local_holiday(md, "utc_day", "home_tz", "home_country_iso")),
                         wd=pl.col("utc_day").str.to_date().dt.weekday())
    typical = md.filter(~pl.col("hol")).group_by("merchant_id", "wd").agg(pl.col("len").mean().alias("t"))
    dip = md.filter(pl.col("hol")).join(typical, on=["merchant_id", "wd"])
    # a ratio of sums, not a mean of log ratios: with a handful of arrivals per day, E[ln(n / mean)]
    # is biased below 0 even when holidays change nothing
    roster_effect = float(np.log(dip["len"].sum() / dip["t"].sum())) if dip.height else float("nan")
    return {"s3_holiday_log_effect": s3_effect, "s3_holiday_cells": int(hol.height),
            "r_holiday_log_effect": roster_effect, "r_holiday_merchant_days": int(dip.height)}


def night_share_gap(roster: pl.DataFrame, group_events: pl.DataFrame, s1: pl.DataFrame,
                    site_timezones: pl.DataFrame) -> dict:
    """T-S5-01, local-time coherence: among arrivals routed to a tz group whose clock is >= 6 h from
    the merchant's main group (its largest long-run S1 weight), the share falling at 00:00-05:59 in
    the group's local time, minus the same share among arrivals routed to the main group (its own
    local time). An arrival's instant comes from the roster (arrival_seq = its ordinal among the
    merchant's arrivals in roster order), its group from the S5 group event log."""

    from engine.calendar import tz_offsets

    times = roster.select("merchant_id", "utc_timestamp").with_columns(
        arrival_seq=pl.int_range(pl.len(), dtype=pl.UInt64).over("merchant_id"))
    routed = group_events.select("merchant_id", "arrival_seq", "tz_group_id").join(
        times, on=["merchant_id", "arrival_seq"], how="inner")
    weight = s1.select(*_SITE_PK, "p_weight").join(site_timezones.select(*_SITE_PK, "tzid"), on=_SITE_PK) \
        .group_by("merchant_id", "tzid").agg(pl.col("p_weight").sum().alias("w")) \
        .sort(["merchant_id", "w", "tzid"], descending=[False, True, False]) \
        .group_by("merchant_id", maintain_order=True).agg(pl.col("tzid").first().alias("main"))
    routed = routed.join(weight, on="merchant_id", how="left")
    if routed.height == 0:
        return {"s5_night_share_gap": float("nan"), "s5_night_share_far": float("nan"), "s5_night_share_main": float("nan"),
                "s5_far_arrivals": 0}
    ts = routed["utc_timestamp"]
    day = ts.str.slice(0, 10).str.to_date().to_physical().to_numpy().astype(np.int64)
    quarter = (ts.str.slice(11, 2).cast(pl.Int64) * 4 + ts.str.slice(14, 2).cast(pl.Int64) // 15).to_numpy()
    first, n_days = int(day.min()), int(day.max() - day.min() + 1)
    tzs = sorted(set(routed["tz_group_id"].to_list()) | set(routed["main"].to_list()))
    index = {t: i for i, t in enumerate(tzs)}
    offsets = tz_offsets(tzs, first, n_days)
    g = np.array([index[t] for t in routed["tz_group_id"].to_list()])
    m = np.array([index[t] for t in routed["main"].to_list()])
    off_g, off_m = offsets[g, day - first, quarter], offsets[m, day - first, quarter]
    apart = np.abs(off_g - off_m) % 86_400
    far = np.minimum(apart, 86_400 - apart) >= FAR_HOURS * 3600
    at_main = routed["tz_group_id"].to_numpy() == routed["main"].to_numpy()
    local_hour = ((quarter * 900 + off_g) // 3600) % 24
    night = (local_hour >= NIGHT_HOURS[0]) & (local_hour < NIGHT_HOURS[1])
    far_share = float(night[far].mean()) if far.any() else float("nan")
    main_share = float(night[at_main].mean()) if at_main.any() else float("nan")
    return {"s5_night_share_gap": abs(far_share - main_share), "s5_night_share_far": far_share,
            "s5_night_share_main": main_share, "s5_far_arrivals": int(far.sum()),
            SERIES: {"s5_local_hour_far": np.bincount(local_hour[far], minlength=24).tolist(),
                     "s5_local_hour_main": np.bincount(local_hour[at_main], minlength=24).tolist()}}
