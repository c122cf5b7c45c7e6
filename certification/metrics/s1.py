"""S1 site weights: T-S1-01..04 and their cohorts."""

from __future__ import annotations

import polars as pl

from ._common import _BY_MERCHANT, _float

# --- S1 site weights ---

_P = pl.col("p_weight")
UNIFORM_TOLERANCE = 1e-12  # T-S1-04: a merchant is uniform when max - min <= this


def _per_merchant(s1: pl.DataFrame) -> pl.DataFrame:
    """One row per merchant: sites N, top1 and top2 shares, HHI, max - min spread."""
    return s1.group_by(_BY_MERCHANT).agg(
        pl.len().alias("n"),
        _P.max().alias("top1"),
        _P.sort(descending=True).get(1, null_on_oob=True).alias("top2"),
        (_P * _P).sum().alias("hhi"),
        (_P.max() - _P.min()).alias("spread"),
    )


def t_s1_01_residual_median(s1: pl.DataFrame) -> float:
    """T-S1-01: median over all S1 rows of |p_weight - 1/N_m|, N_m = sites of the row's merchant."""
    return _float(s1.select((_P - 1.0 / pl.len().over(_BY_MERCHANT)).abs().median()).item())


def t_s1_02_top_gap_median(s1: pl.DataFrame) -> float:
    """T-S1-02: median over merchants with N_m >= 2 of top1 - top2 p_weight."""
    return _float(_per_merchant(s1).filter(pl.col("n") >= 2).select((pl.col("top1") - pl.col("top2")).median()).item())


def t_s1_03_hhi_iqr(s1: pl.DataFrame) -> float:
    """T-S1-03: IQR (q75 - q25, linear interpolation) over merchants of HHI = sum p_weight^2."""
    hhi = pl.col("hhi")
    return _float(_per_merchant(s1).select(
        hhi.quantile(0.75, interpolation="linear") - hhi.quantile(0.25, interpolation="linear")).item())


def t_s1_04_uniform_share(s1: pl.DataFrame) -> float:
    """T-S1-04: share of merchants whose weights are uniform (max - min <= 1e-12)."""
    return _float(_per_merchant(s1).select((pl.col("spread") <= UNIFORM_TOLERANCE).mean()).item())


S1_METRICS = {
    "T-S1-01": t_s1_01_residual_median,
    "T-S1-02": t_s1_02_top_gap_median,
    "T-S1-03": t_s1_03_hhi_iqr,
    "T-S1-04": t_s1_04_uniform_share,
}


def s1_cohorts(s1: pl.DataFrame, site_timezones: pl.DataFrame) -> pl.DataFrame:
    """The four S1 metrics per diagnostic cohort (docs/certification.md, Cohorts).

    Cohorts: `tz_topology` = single_tz / multi_tz (distinct tzids of the merchant's sites in
    site_timezones) and `size_bucket` = the bucket S1 recorded in `weight_profile` (small / mid /
    large as the policy defines them). Columns: cohort_kind, cohort, merchants, sites, T-S1-01..04.
    """
    topology = site_timezones.group_by(_BY_MERCHANT).agg(
        pl.when(pl.col("tzid").n_unique() > 1).then(pl.lit("multi_tz")).otherwise(pl.lit("single_tz")).alias("tz_topology"))
    tagged = s1.join(topology, on=_BY_MERCHANT, how="left")
    rows = []
    for kind, column, order in (("tz_topology", "tz_topology", ("single_tz", "multi_tz")),
                                ("size_bucket", "weight_profile", ("small", "mid", "large"))):
        for cohort in order:
            part = tagged.filter(pl.col(column) == cohort)
            rows.append({"cohort_kind": kind, "cohort": cohort,
                         "merchants": part[_BY_MERCHANT].n_unique(), "sites": part.height,
                         **{gate: (fn(part) if part.height else float("nan")) for gate, fn in S1_METRICS.items()}})
    return pl.DataFrame(rows, schema={"cohort_kind": pl.String, "cohort": pl.String, "merchants": pl.Int64,
                                      "sites": pl.Int64, **{gate: pl.Float64 for gate in S1_METRICS}})
