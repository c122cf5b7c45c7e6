"""Diagnostic cohorts: every S1/S3/S4 metric per tz topology, size bucket and merchant class."""

from __future__ import annotations

import polars as pl

from ._common import _BY_MERCHANT
from .s1 import s1_cohorts
from .s3 import s3_metrics
from .s4 import s4_merchant_days, s4_metrics

# --- S3/S4 cohorts (diagnostic) ---

DEFAULT_SIZE_BUCKETS = {"small_max_sites": 9, "mid_max_sites": 29}  # small < 10 sites, mid < 30, large otherwise


def merchant_cohorts(site_timezones: pl.DataFrame, merchants: pl.DataFrame | None = None,
                     size_buckets: dict | None = None, s1: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per merchant: tz_topology (single_tz / multi_tz by distinct site tzids), size_bucket
    and merchant_class. The size bucket is the one S1 recorded (`weight_profile`) when `s1` is
    given, so S1 and S3/S4 cohorts agree; otherwise by site count with the S1 policy's
    `merchant_size_buckets` edges (inclusive maxima; default small < 10 sites, mid < 30)."""
    edges = size_buckets or DEFAULT_SIZE_BUCKETS
    sites = pl.len()
    tags = site_timezones.group_by(_BY_MERCHANT).agg(
        pl.when(pl.col("tzid").n_unique() > 1).then(pl.lit("multi_tz")).otherwise(pl.lit("single_tz")).alias("tz_topology"),
        pl.when(sites <= edges["small_max_sites"]).then(pl.lit("small"))
        .when(sites <= edges["mid_max_sites"]).then(pl.lit("mid")).otherwise(pl.lit("large")).alias("size_bucket"))
    if s1 is not None and "weight_profile" in s1.columns:
        recorded = s1.group_by(_BY_MERCHANT).agg(pl.col("weight_profile").first().alias("recorded"))
        tags = tags.join(recorded, on=_BY_MERCHANT, how="left").with_columns(
            size_bucket=pl.when(pl.col("recorded").is_in(["small", "mid", "large"]))
            .then(pl.col("recorded")).otherwise(pl.col("size_bucket"))).drop("recorded")
    if merchants is not None:
        tags = tags.join(merchants.select(_BY_MERCHANT, "merchant_class"), on=_BY_MERCHANT, how="left")
    return tags.sort(_BY_MERCHANT)


def s3_s4_cohorts(s3: pl.DataFrame, s4: pl.DataFrame, site_timezones: pl.DataFrame,
                  merchants: pl.DataFrame | None = None, size_buckets: dict | None = None,
                  s1: pl.DataFrame | None = None) -> pl.DataFrame:
    """Every S3 and S4 gate metric per cohort (tz_topology, size_bucket, merchant_class), keyed as
    the population metrics so that `gates.band` gives the band each cohort would reach. Columns:
    cohort_kind, cohort, merchants, merchant_days, then the metric keys."""
    tags = merchant_cohorts(site_timezones, merchants, size_buckets, s1)
    md = s4_merchant_days(s4)
    kinds = [("tz_topology", ("single_tz", "multi_tz")), ("size_bucket", ("small", "mid", "large"))]
    if "merchant_class" in tags.columns:
        kinds.append(("merchant_class", tuple(sorted(tags["merchant_class"].drop_nulls().unique().to_list()))))
    rows = []
    for kind, cohorts in kinds:
        for cohort in cohorts:
            ids = tags.filter(pl.col(kind) == cohort).select(_BY_MERCHANT)
            part3 = s3.join(ids, on=_BY_MERCHANT, how="semi")
            part_md = md.join(ids, on=_BY_MERCHANT, how="semi")
            row = {"cohort_kind": kind, "cohort": cohort, "merchants": ids.height, "merchant_days": part_md.height}
            if part3.height:
                row.update(s3_metrics(part3, gamma_clip=(0.0, float("inf"))))
                row.pop("s3_clipped_share")  # clip pressure is a population check
            if part_md.height:
                row.update(s4_metrics(part_md))
            rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def cohort_tables(s1: pl.DataFrame, s3: pl.DataFrame, s4: pl.DataFrame, site_timezones: pl.DataFrame,
                  merchants: pl.DataFrame | None = None, size_buckets: dict | None = None) -> dict:
    """All diagnostic cohort tables as JSON-ready rows: {"S1": [...], "S3_S4": [...]}; a metric
    that is undefined for a cohort (NaN, e.g. T-S3-02 with < 2 large tz groups) becomes None."""
    def rows(df: pl.DataFrame) -> list[dict]:
        return [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in df.to_dicts()]

    return {"S1": rows(s1_cohorts(s1, site_timezones)),
            "S3_S4": rows(s3_s4_cohorts(s3, s4, site_timezones, merchants, size_buckets, s1))}
