"""Who sells how much: the policy's class profiles, the merchant table, zones and volumes, counts."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from ..calendar import day_bounds, day_string, parse_day
from ..errors import EngineError
from ..rng import Stream
from .layout import CHANNELS, MERCHANT_LEVEL_LO, POLICY_NAME, SLOT_MERCHANT_VOLUME, SLOT_SITE0, SLOT_ZONE0


def _horizon(policy: dict, grid: tuple[int, int]) -> tuple[int, int]:
    """The roster's days: the S3 day grid, or an explicit sub-range of it (S5 needs S4 rows for every day)."""
    h = policy["horizon"]
    if h == "follow_day_grid":
        return grid
    start = parse_day(h["start"], POLICY_NAME, "/horizon/start")
    end = parse_day(h["end"], POLICY_NAME, "/horizon/end")
    if end < start:
        raise EngineError(POLICY_NAME, "/horizon", f"horizon ends ({h['end']}) before it starts ({h['start']})")
    if start < grid[0] or end > grid[1]:
        raise EngineError(POLICY_NAME, "/horizon",
                          f"horizon {h['start']}..{h['end']} leaves the day grid "
                          f"{day_string(grid[0])}..{day_string(grid[1])}")
    return start, end


def check_policy(policy: Any, day_range: tuple[str, str]) -> None:
    """Every rule of the roster policy that needs no data (the pipeline checks it before a run
    writes anything): horizon inside the day grid, `min_active_days` within the grid (no horizon
    could honour more; an explicit horizon shorter than it is the documented all-days-active law),
    class profiles unique with some intraday weight."""
    policy = getattr(policy, "data", policy)
    grid = day_bounds(day_range, "day_effect_policy_v1")
    _horizon(policy, grid)
    grid_days = grid[1] - grid[0] + 1
    if int(policy["min_active_days"]) > grid_days:
        raise EngineError(POLICY_NAME, "/min_active_days",
                          f"{policy['min_active_days']} active days per merchant cannot fit the {grid_days}-day grid "
                          f"{day_string(grid[0])}..{day_string(grid[1])}")
    profiles(policy, [])


def profiles(policy: dict, classes: list[str]) -> tuple[dict[str, int], np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Profile index of each merchant class and the profile tables (base rate, weekday, intraday).

    Profile 0 is the policy's default profile; a class the policy does not name uses it and is
    listed in the card, so a new world class never silently changes the other classes' law.
    """
    named = policy["class_profiles"]
    names = [p["merchant_class"] for p in named]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise EngineError(POLICY_NAME, "/class_profiles", f"merchant_class listed more than once: {dup}")
    table = [policy["default_profile"], *named]
    for i, p in enumerate(table):
        if sum(p["intraday_weights"]) <= 0:
            where = "/default_profile" if i == 0 else f"/class_profiles/{i - 1}"
            raise EngineError(POLICY_NAME, f"{where}/intraday_weights", "intraday weights sum to zero")
    index = {n: i + 1 for i, n in enumerate(names)}
    profile_of_class = {c: index.get(c, 0) for c in classes}
    defaulted = sorted(c for c in classes if c not in index)
    base = np.array([p["base_rate"] for p in table], dtype=np.float64)
    weekday = np.array([p["weekday_multipliers"] for p in table], dtype=np.float64)
    intraday = np.array([p["intraday_weights"] for p in table], dtype=np.float64)
    return profile_of_class, base, weekday, intraday, defaulted


def _cast(df: pl.DataFrame, where: str, **types) -> pl.DataFrame:
    """The named columns under the given types; a value that cannot take its type is an input error."""
    try:
        return df.select(pl.col(name).cast(dtype) for name, dtype in types.items())
    except pl.exceptions.PolarsError as exc:  # e.g. a negative merchant_id
        raise EngineError(where, ",".join(types), f"column cannot take its contract type: {exc}") from None


def _merchant_table(merchants: pl.DataFrame, site_timezones: pl.DataFrame) -> pl.DataFrame:
    """One row per merchant (ascending merchant_id): facts, number of sites and home tzid."""
    need = {"merchant_id", "home_country_iso", "merchant_class", "channel", "is_virtual"}
    missing = sorted(need - set(merchants.columns))
    if missing:
        raise EngineError("merchants", ",".join(missing), "missing column(s)")
    missing = sorted({"merchant_id", "legal_country_iso", "tzid"} - set(site_timezones.columns))
    if missing:
        raise EngineError("site_timezones", ",".join(missing), "missing column(s)")
    m = _cast(merchants, "merchants", merchant_id=pl.UInt64, home_country_iso=pl.String,
              merchant_class=pl.String, channel=pl.String, is_virtual=pl.Boolean).sort("merchant_id")
    if m.height == 0:
        raise EngineError("merchants", "(table)", "no merchants: a roster needs at least one")
    for col in m.columns:
        if m[col].null_count():
            raise EngineError("merchants", col, "null value(s); column is non-nullable")
    dup = m["merchant_id"].is_duplicated()
    if dup.any():
        raise EngineError("merchants", f"merchant_id {m['merchant_id'][int(dup.arg_max())]}", "duplicate merchant_id")
    bad = ~m["channel"].is_in(list(CHANNELS))
    if bad.any():
        raise EngineError("merchants", f"merchant_id {m['merchant_id'][int(bad.arg_max())]}",
                          f"channel {m['channel'][int(bad.arg_max())]!r} not one of {CHANNELS}")

    sites = _cast(site_timezones, "site_timezones", merchant_id=pl.UInt64, legal_country_iso=pl.String, tzid=pl.String)
    for col in sites.columns:
        if sites[col].null_count():
            raise EngineError("site_timezones", col, "null value(s); column is non-nullable")
    orphan = sites.join(m.select("merchant_id"), on="merchant_id", how="anti")
    if orphan.height:
        # S1 routes every site's merchant; one missing here would have no arrivals (PRE-03).
        raise EngineError("site_timezones", f"merchant_id {orphan['merchant_id'].min()}", "merchant not in the merchants table")
    per_tz = (
        sites.join(m.select("merchant_id", "home_country_iso"), on="merchant_id")
        .group_by("merchant_id", "tzid")
        .agg(pl.len().alias("n"), (pl.col("legal_country_iso") == pl.col("home_country_iso")).sum().alias("n_home"))
    )
    # Home tz: most sites in the home country (ties: smallest tzid); a merchant with no home-country
    # site falls back to its most frequent tzid overall (same tie rule).
    home = (
        per_tz.with_columns(
            pl.when(pl.col("n_home").max().over("merchant_id") > 0).then(pl.col("n_home")).otherwise(pl.col("n")).alias("score")
        )
        .sort(["merchant_id", "score", "tzid"], descending=[False, True, False])
        .group_by("merchant_id", maintain_order=True)
        .agg(pl.col("tzid").first().alias("home_tzid"), pl.col("n").sum().alias("n_sites"))
    )
    m = m.join(home, on="merchant_id", how="left")
    if m["n_sites"].null_count():
        first = m.filter(pl.col("n_sites").is_null())["merchant_id"][0]
        raise EngineError("site_timezones", f"merchant_id {first}", "merchant has no sites; its home time zone is undefined")
    return m


def merchant_zones(site_timezones: pl.DataFrame, merchant_ids: pl.Series) -> pl.DataFrame:
    """The zones (distinct tzids) of each merchant's sites with their site counts, in merchant order
    then tzid order; `start` and `zones` index each merchant's run of rows (merchants in
    `merchant_ids` order, which is ascending)."""
    per = (site_timezones.select(pl.col("merchant_id").cast(pl.UInt64), pl.col("tzid").cast(pl.String))
           .group_by("merchant_id", "tzid").agg(pl.len().alias("sites")).sort("merchant_id", "tzid"))
    order = pl.DataFrame({"merchant_id": merchant_ids.cast(pl.UInt64)}).with_row_index("m")
    per = per.join(order, on="merchant_id", how="inner").sort("m", "tzid")
    runs = per.group_by("m", maintain_order=True).agg(pl.len().alias("zones"))
    counts = np.zeros(order.height, dtype=np.int64)
    counts[runs["m"].to_numpy()] = runs["zones"].to_numpy()
    return per.with_columns(start=pl.Series(np.repeat(np.cumsum(counts) - counts, counts)),
                            zones=pl.Series(np.repeat(counts, counts)))


def _volumes(stream: Stream, mid: np.ndarray, n_sites: np.ndarray, rate_pol: dict) -> np.ndarray:
    """Each merchant's expected volume relative to a reference merchant: a merchant factor times the
    sum of its sites' productivities, to the power size_exponent, per size_reference_sites:

        V_m = exp(s_m z_m - s_m^2/2) x (sum_k exp(s_s z_k - s_s^2/2) / size_reference_sites) ^ size_exponent

    Lognormal factors of mean one. With size_exponent near 1, volume grows nearly in proportion to
    sites, so the world's Pareto-tailed site counts carry into a heavy-tailed volume distribution
    (the roster policy cites the firm-size statistic it is calibrated to)."""
    s_m, s_s = float(rate_pol["merchant_volume_sigma"]), float(rate_pol.get("site_productivity_sigma", 0.0))
    z_m = stream.normals(mid, np.full(mid.size, MERCHANT_LEVEL_LO | SLOT_MERCHANT_VOLUME, dtype=np.uint64))
    merchant_factor = np.exp(s_m * z_m - 0.5 * s_m * s_m)
    if s_s > 0:
        owner = np.repeat(np.arange(mid.size), n_sites)
        k = np.arange(owner.size) - np.repeat(np.cumsum(n_sites) - n_sites, n_sites)
        z_s = stream.normals(mid[owner], np.uint64(MERCHANT_LEVEL_LO | SLOT_SITE0) + k.astype(np.uint64))
        site_sum = np.bincount(owner, weights=np.exp(s_s * z_s - 0.5 * s_s * s_s), minlength=mid.size)
    else:
        site_sum = n_sites.astype(np.float64)
    return merchant_factor * (site_sum / float(rate_pol["size_reference_sites"])) ** float(rate_pol["size_exponent"])


def _pick_zones(stream: Stream, mid, a_m, a_day_lo, j, zone_start, zone_count, zone_sites) -> np.ndarray:
    """Row of `merchant_zones` each arrival's time follows: the merchant's only zone, or a draw by
    site counts (the uniform at SLOT_ZONE0 + j) among its zones. Every merchant has a run of zone
    rows, in merchant order, so run r is merchant r."""
    first_rows = np.flatnonzero(np.r_[True, zone_start[1:] != zone_start[:-1]]) if zone_start.size else zone_start
    start_of, count_of = zone_start[first_rows], zone_count[first_rows]
    out = start_of[a_m].copy()
    multi = np.flatnonzero(count_of[a_m] > 1)
    if multi.size:
        u = stream.uniforms(mid[a_m[multi]], a_day_lo[multi] + np.uint64(SLOT_ZONE0) + j[multi].astype(np.uint64))
        # merchant r's cumulative site shares, offset by r: its keys lie in (r, r + 1], the last exactly r + 1
        run_of_row = np.repeat(np.arange(start_of.size), count_of)
        totals = np.bincount(run_of_row, weights=zone_sites, minlength=start_of.size)
        within = np.cumsum(zone_sites) - np.repeat(np.cumsum(totals) - totals, count_of)
        keys = run_of_row + within / totals[run_of_row]
        keys[start_of + count_of - 1] = np.arange(start_of.size) + 1.0
        out[multi] = np.searchsorted(keys, a_m[multi] + u, side="left")
    return out
