"""S3 day effects: T-S3-01..03 (Brown-Forsythe with its effect size)."""

from __future__ import annotations

import polars as pl

from ._common import _BY_MERCHANT, _float, _q

# --- S3 day effects ---

_GAMMA = pl.col("gamma")
_LOG_GAMMA = pl.col("log_gamma")
TZ_GROUP_MIN_ROWS = 500  # T-S3-02: only tz groups with at least this many S3 rows enter the test


def s3_merchant_std(s3: pl.DataFrame) -> pl.DataFrame:
    """One row per merchant: std(gamma), ddof = 1, over all of the merchant's S3 rows."""
    return s3.group_by(_BY_MERCHANT).agg(_GAMMA.std(ddof=1).alias("gamma_std"))


def t_s3_01_merchant_std(s3: pl.DataFrame) -> dict:
    """T-S3-01: median over merchants of std(gamma) (ddof = 1, all the merchant's rows); the B+ tail
    condition is p90 / p50 of that same distribution (linear interpolation) >= 1.25."""
    std = pl.col("gamma_std")
    med, p90 = s3_merchant_std(s3).select(std.median().alias("p50"), _q(std, 0.90).alias("p90")).row(0)
    med, p90 = _float(med), _float(p90)
    return {"s3_std_median": med, "s3_std_p90": p90, "s3_std_p90_over_p50": p90 / med if med else float("nan")}


def brown_forsythe(values: pl.Expr, groups: str, frame: pl.DataFrame) -> tuple[float, int, int, float]:
    """Brown-Forsythe (Levene with center = median) over the groups of `frame`: (p, k, N, omega^2).

    z = |y - median of y's group|; W = (N - k)/(k - 1) * SS_between / SS_within with
    SS_between = sum n_i (zbar_i - zbar)^2 and SS_within = sum (z - zbar_i)^2; p = P(F(k - 1, N - k) > W).
    omega^2 = (SS_between - (k - 1) MS_within) / (SS_total + MS_within), MS_within = SS_within / (N - k):
    the share of the spread of z the groups explain, net of what noise alone gives (about 0 when the
    groups differ only by noise, whatever N; Cohen's conventions: 0.01 small, 0.06 medium, 0.14 large).
    The p-value alone saturates at this sample size (hundreds of thousands of rows), the effect size
    does not. Written out here (a polars pass plus the F tail) rather than calling scipy.stats, whose
    import alone costs more than the whole computation.
    """
    from scipy.special import fdtrc

    z = frame.select(pl.col(groups), (values - values.median().over(groups)).abs().alias("z"))
    per = z.group_by(groups).agg(pl.len().alias("n"), pl.col("z").mean().alias("zbar"))
    zz = z.join(per, on=groups)
    n_total, k = z.height, per.height
    grand = z["z"].mean()
    between = per.select((pl.col("n") * (pl.col("zbar") - grand) ** 2).sum()).item()
    within = zz.select(((pl.col("z") - pl.col("zbar")) ** 2).sum()).item()
    if k < 2 or n_total <= k:
        return float("nan"), k, n_total, float("nan")
    ms_within = within / (n_total - k)
    omega2 = (between - (k - 1) * ms_within) / (between + within + ms_within) if (between + within) > 0 else float("nan")
    if within == 0:
        return (0.0 if between > 0 else float("nan")), k, n_total, omega2
    w = (n_total - k) / (k - 1) * between / within
    return float(fdtrc(k - 1, n_total - k, w)), k, n_total, float(omega2)


def t_s3_02_tz_differentiation(s3: pl.DataFrame, min_rows: int = TZ_GROUP_MIN_ROWS) -> dict:
    """T-S3-02: Brown-Forsythe test (Levene, center = median) of log_gamma across the tz groups
    (tz_group_id) with >= 500 rows -> p-value and effect size omega^2 (see `brown_forsythe`);
    D = CV (std ddof=1 / mean) across those groups of their std(log_gamma) (ddof = 1). Fewer than
    two such groups: p = NaN, omega^2 = NaN, D = NaN."""
    sizes = s3.group_by("tz_group_id").agg(pl.len().alias("n"), _LOG_GAMMA.std(ddof=1).alias("sd")) \
        .filter(pl.col("n") >= min_rows).sort("tz_group_id")
    if sizes.height < 2:
        return {"s3_tz_levene_p": float("nan"), "s3_tz_effect_omega2": float("nan"), "s3_tz_std_cv": float("nan"),
                "s3_tz_groups_tested": sizes.height}
    rows = s3.join(sizes.select("tz_group_id"), on="tz_group_id", how="semi")
    p, _, _, omega2 = brown_forsythe(_LOG_GAMMA, "tz_group_id", rows)
    d = sizes.select(pl.col("sd").std(ddof=1) / pl.col("sd").mean()).item()
    return {"s3_tz_levene_p": p, "s3_tz_effect_omega2": omega2, "s3_tz_std_cv": _float(d),
            "s3_tz_groups_tested": sizes.height}


def t_s3_03_aggregate_stability(s3: pl.DataFrame, gamma_clip: tuple[float, float] | None = None,
                                clipped_rows: int | None = None) -> dict:
    """T-S3-03: min gamma (> 0), clipped share (rows whose gamma sits at a gamma_clip bound, <= 1%),
    |mean gamma - 1| (<= 0.02), max |log_gamma| (<= 4).

    The clip bounds are the policy's; without them the S3 run report's clipped row count is used,
    and without either the bounds of the default day_effect_policy_v1 are read.
    """
    if gamma_clip is None and clipped_rows is None:
        from engine.policies import load_policy

        clip = load_policy("day_effect_policy_v1").data["sigma_gamma_policy_v2"]["gamma_clip"]
        gamma_clip = (clip["min"], clip["max"])
    # SIM300 misreads the upper-case polars expression _GAMMA as a constant; the comparison is in its natural order.
    at_bound = (_GAMMA <= gamma_clip[0]) | (_GAMMA >= gamma_clip[1]) if gamma_clip is not None else pl.lit(False)  # noqa: SIM300
    lo, dev, lg, n_clip = s3.select(_GAMMA.min().alias("lo"), (_GAMMA.mean() - 1.0).abs().alias("dev"),
                                    _LOG_GAMMA.abs().max().alias("lg"), at_bound.sum().alias("clip")).row(0)
    clipped = int(n_clip) if gamma_clip is not None else int(clipped_rows)
    return {"s3_min_gamma": _float(lo), "s3_clipped_share": clipped / s3.height if s3.height else float("nan"),
            "s3_mean_gamma_dev": _float(dev), "s3_max_abs_log_gamma": _float(lg)}


def s3_metrics(s3: pl.DataFrame, clipped_rows: int | None = None, gamma_clip: tuple[float, float] | None = None) -> dict:
    """Every S3 gate metric, keyed as in certification_gates_v1."""
    return {**t_s3_01_merchant_std(s3), **t_s3_02_tz_differentiation(s3),
            **t_s3_03_aggregate_stability(s3, gamma_clip=gamma_clip, clipped_rows=clipped_rows)}
