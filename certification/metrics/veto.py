"""S4 against the data: the raw mix S1 x S3 imply, the data reference, the anti-artifact veto gates."""

from __future__ import annotations

import polars as pl

from ._common import _CELL, _MD, _SITE_PK, _float, _q
from .s4 import s4_merchant_days

# --- S4 against the data: raw mix, data reference, anti-artifact veto gates ---

DOMINANCE_BAND_EDGES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0 + 1e-12)  # top group's mean raw share
MIN_MERCHANTS_PER_BAND = 10
MIN_DAYS_FOR_SLOPE = 3
RATIO_QUANTILE = 0.99


def raw_mix(s1: pl.DataFrame, s3: pl.DataFrame, site_timezones: pl.DataFrame) -> pl.DataFrame:
    """The mix S1 x S3 imply, recomputed by the harness (never read from S4's own columns): per
    (merchant, day, tz group) the raw share r = base x gamma / sum over the day's groups, base = the
    sum of S1 p_weight over the merchant's sites in the group. Columns: merchant_id, utc_day,
    tz_group_id, base, gamma, mass_raw, r (rows in S3's key order)."""
    base = s1.select(*_SITE_PK, "p_weight").join(site_timezones.select(*_SITE_PK, "tzid"), on=_SITE_PK) \
        .group_by("merchant_id", "tzid").agg(pl.col("p_weight").sum().alias("base"))
    mix = s3.select(*_CELL, "gamma").join(base, left_on=["merchant_id", "tz_group_id"], right_on=["merchant_id", "tzid"],
                                          how="left", maintain_order="left")
    mass = pl.col("base") * pl.col("gamma")
    return mix.with_columns(mass_raw=mass).with_columns(r=pl.col("mass_raw") / pl.col("mass_raw").sum().over(_MD))


def data_reference_days(mix: pl.DataFrame) -> pl.DataFrame:
    """Merchant-days of the data reference: what an S4 that changes nothing would publish (p = r)."""
    return s4_merchant_days(mix.select(*_CELL, pl.col("r").alias("p_group"), "mass_raw"))


def _top_two(mix: pl.DataFrame) -> pl.DataFrame:
    """Per multi-group merchant: its two largest groups by mean raw share over days (ties: tz id
    order) and the top group's mean raw share (its dominance)."""
    means = mix.group_by("merchant_id", "tz_group_id").agg(pl.col("r").mean().alias("mean_r"))
    ranked = means.sort(["merchant_id", "mean_r", "tz_group_id"], descending=[False, True, False]) \
        .with_columns(rank=pl.int_range(pl.len()).over("merchant_id"))
    g1 = ranked.filter(pl.col("rank") == 0).select("merchant_id", pl.col("tz_group_id").alias("g1"),
                                                   pl.col("mean_r").alias("dominance"))
    g2 = ranked.filter(pl.col("rank") == 1).select("merchant_id", pl.col("tz_group_id").alias("g2"))
    return g1.join(g2, on="merchant_id")  # inner: single-group merchants drop out


def compression_slopes(mix: pl.DataFrame, s4: pl.DataFrame, min_days: int = MIN_DAYS_FOR_SLOPE) -> pl.DataFrame:
    """Veto gate (a), per multi-tz merchant: the least-squares slope, across its days, of
    ln(p1/p2) (published) on ln(r1/r2) (raw), 1 and 2 = its two largest groups by mean raw share.
    An S4 that keeps the data's contrasts has slope 1; a power map p ~ r^tau has slope tau; a cap
    that squeezes dominant days flattens it. Columns: merchant_id, dominance, days, slope."""
    pair = _top_two(mix)
    cell = mix.select(*_CELL, "r").join(s4.select(*_CELL, "p_group"), on=_CELL, how="left")

    def side(g: str, tag: str) -> pl.DataFrame:
        return cell.join(pair.select("merchant_id", pl.col(g).alias("tz_group_id")), on=["merchant_id", "tz_group_id"]) \
            .select("merchant_id", "utc_day", pl.col("r").alias(f"r{tag}"), pl.col("p_group").alias(f"p{tag}"))

    days = side("g1", "1").join(side("g2", "2"), on=["merchant_id", "utc_day"]) \
        .filter((pl.col("r2") > 0) & (pl.col("p2") > 0) & (pl.col("r1") > 0) & (pl.col("p1") > 0)) \
        .with_columns(x=(pl.col("r1") / pl.col("r2")).log(), y=(pl.col("p1") / pl.col("p2")).log())
    x, y = pl.col("x"), pl.col("y")
    per = days.group_by("merchant_id").agg(
        pl.len().alias("days"),
        ((x - x.mean()) * (y - y.mean())).sum().alias("sxy"),
        ((x - x.mean()) ** 2).sum().alias("sxx"))
    # a merchant whose raw log-ratio never moves has no slope to measure
    per = per.filter((pl.col("days") >= min_days) & (pl.col("sxx") > 1e-12))
    return per.join(pair.select("merchant_id", "dominance"), on="merchant_id") \
        .select("merchant_id", "dominance", "days", (pl.col("sxy") / pl.col("sxx")).alias("slope")).sort("merchant_id")


def slope_by_band(slopes: pl.DataFrame, edges=DOMINANCE_BAND_EDGES, min_merchants: int = MIN_MERCHANTS_PER_BAND) -> list[dict]:
    """Median slope per band of dominance [edge_i, edge_i+1); bands with fewer merchants are
    reported but not graded."""
    out = []
    for lo, hi in zip(edges, edges[1:]):
        part = slopes.filter((pl.col("dominance") >= lo) & (pl.col("dominance") < hi))
        out.append({"band": f"[{lo:.1f}, {min(hi, 1.0):.1f}{']' if hi > 1 else ')'}", "merchants": part.height,
                    "median_slope": _float(part["slope"].median()) if part.height else None,
                    "graded": part.height >= min_merchants})
    return out


def share_ratios(mix: pl.DataFrame, s4: pl.DataFrame) -> pl.DataFrame:
    """Veto gate (b), per (merchant, tz group) of multi-tz merchants: |ln(mean over days of p_group /
    mean over days of r)|: how far S4 moves a group's long-run traffic from what its site weights and
    day effects imply (the single island store given 74x its weight scores ln 74 = 4.3)."""
    multi = mix.group_by("merchant_id").agg(pl.col("tz_group_id").n_unique().alias("g")).filter(pl.col("g") >= 2)
    cell = mix.join(multi.select("merchant_id"), on="merchant_id", how="semi") \
        .select(*_CELL, "r").join(s4.select(*_CELL, "p_group"), on=_CELL, how="left")
    per = cell.group_by("merchant_id", "tz_group_id").agg(pl.col("p_group").mean().alias("mean_p"),
                                                          pl.col("r").mean().alias("mean_r"))
    return per.filter((pl.col("mean_r") > 0) & (pl.col("mean_p") > 0)) \
        .with_columns(abs_log_ratio=(pl.col("mean_p") / pl.col("mean_r")).log().abs()).sort("merchant_id", "tz_group_id")


def veto_metrics(mix: pl.DataFrame, s4: pl.DataFrame, edges=DOMINANCE_BAND_EDGES,
                 min_merchants: int = MIN_MERCHANTS_PER_BAND, quantile: float = RATIO_QUANTILE,
                 min_days: int = MIN_DAYS_FOR_SLOPE) -> dict:
    """The anti-artifact veto gates' metrics from the raw mix and the published S4 (see `veto_summary`)."""
    return veto_summary(compression_slopes(mix, s4, min_days), share_ratios(mix, s4), edges, min_merchants, quantile)


def veto_summary(slopes: pl.DataFrame, ratios: pl.DataFrame, edges=DOMINANCE_BAND_EDGES,
                 min_merchants: int = MIN_MERCHANTS_PER_BAND, quantile: float = RATIO_QUANTILE) -> dict:
    """`veto_slope_min_band_median` (the smallest graded band median of the per-merchant slopes) and
    `veto_share_ratio_p99` (quantile, linear, of the per-group |log ratios|), plus the per-band table."""
    bands = slope_by_band(slopes, edges, min_merchants)
    graded = [b["median_slope"] for b in bands if b["graded"] and b["median_slope"] is not None]
    p99 = _float(ratios.select(_q(pl.col("abs_log_ratio"), quantile)).item()) if ratios.height else float("nan")
    return {"veto_slope_min_band_median": min(graded) if graded else float("nan"),
            "veto_share_ratio_p99": p99, "veto_slope_bands": bands}
