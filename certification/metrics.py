"""Certification metrics: each one a short polars expression next to its CERTIFICATION.md recipe.

Every function takes the published dataset frame(s) and returns a plain float, so any value in a
certification record can be recomputed from the datasets alone. Statistics conventions
(CERTIFICATION.md): median = midpoint median (mean of the two middle values for an even count,
which is what polars' `median` does); quantiles use linear interpolation; std uses ddof = 1;
ln is the natural log; a "share" is a fraction in [0, 1].

Sections are delimited by `# --- <state> ... ---` comment lines, one per state.
"""

from __future__ import annotations

import polars as pl

# --- S1 site weights ---

_P = pl.col("p_weight")
_BY_MERCHANT = "merchant_id"
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


def _float(value) -> float:
    return float("nan") if value is None else float(value)


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
    """The four S1 metrics per diagnostic cohort (CERTIFICATION.md, Cohorts).

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


# --- S3 day effects ---

_GAMMA = pl.col("gamma")
_LOG_GAMMA = pl.col("log_gamma")
TZ_GROUP_MIN_ROWS = 500  # T-S3-02: only tz groups with at least this many S3 rows enter the test


def _q(expr: pl.Expr, q: float) -> pl.Expr:
    return expr.quantile(q, interpolation="linear")


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
    at_bound = (_GAMMA <= gamma_clip[0]) | (_GAMMA >= gamma_clip[1]) if gamma_clip is not None else pl.lit(False)
    lo, dev, lg, n_clip = s3.select(_GAMMA.min().alias("lo"), (_GAMMA.mean() - 1.0).abs().alias("dev"),
                                    _LOG_GAMMA.abs().max().alias("lg"), at_bound.sum().alias("clip")).row(0)
    clipped = int(n_clip) if gamma_clip is not None else int(clipped_rows)
    return {"s3_min_gamma": _float(lo), "s3_clipped_share": clipped / s3.height if s3.height else float("nan"),
            "s3_mean_gamma_dev": _float(dev), "s3_max_abs_log_gamma": _float(lg)}


def s3_metrics(s3: pl.DataFrame, clipped_rows: int | None = None, gamma_clip: tuple[float, float] | None = None) -> dict:
    """Every S3 gate metric, keyed as in certification_gates_v1."""
    return {**t_s3_01_merchant_std(s3), **t_s3_02_tz_differentiation(s3),
            **t_s3_03_aggregate_stability(s3, gamma_clip=gamma_clip, clipped_rows=clipped_rows)}


# --- S4 group weights ---

_PG = pl.col("p_group")
_MD = ["merchant_id", "utc_day"]
GROUP_SHARE_FLOOR = 0.05  # T-S4-04: a group "counts" on a day when p_group >= this
DOMINANT = 0.95  # T-S4-03
POINT_MASS_DECIMALS = 6  # T-S4-07


def s4_merchant_days(s4: pl.DataFrame) -> pl.DataFrame:
    """One row per merchant-day: groups n, max p_group, entropy -sum p ln p (p > 0), groups with
    p >= 0.05, |sum p - 1|, and rank_ok: the groups taken in ascending mass_raw order have
    non-decreasing p_group (no pair reversed; two raw masses closer than float resolution may meet
    on one p_group value without counting as a reversal).

    One global sort by (merchant, day, mass_raw) replaces a sort inside every merchant-day: a
    reversal is then a row whose p_group is below its predecessor's in the same merchant-day.
    """
    if "max_p" in s4.columns:  # already aggregated
        return s4
    same_day = (pl.col("merchant_id") == pl.col("merchant_id").shift(1)) & (pl.col("utc_day") == pl.col("utc_day").shift(1))
    ranked = s4.sort(_MD + ["mass_raw"], maintain_order=True) \
        .with_columns(reversed_=(same_day & (_PG < _PG.shift(1))).fill_null(False))
    return ranked.group_by(_MD).agg(
        pl.len().alias("n"),
        _PG.max().alias("max_p"),
        # every term is >= 0; abs() only turns the -0.0 of a single-group day into 0.0
        pl.when(_PG > 0).then(-_PG * _PG.log()).otherwise(0.0).sum().abs().alias("entropy"),
        (_PG >= GROUP_SHARE_FLOOR).sum().alias("n_ge_005"),
        (_PG.sum() - 1.0).abs().alias("mass_error"),
        (~pl.col("reversed_")).all().alias("rank_ok"),
    )


def t_s4_01_max_p_median(s4: pl.DataFrame) -> float:
    """T-S4-01: median over merchant-days of max p_group."""
    return _float(s4_merchant_days(s4).select(pl.col("max_p").median()).item())


def t_s4_02_max_p_p75(s4: pl.DataFrame) -> float:
    """T-S4-02: p75 (linear interpolation) over merchant-days of max p_group."""
    return _float(s4_merchant_days(s4).select(_q(pl.col("max_p"), 0.75)).item())


def t_s4_03_dominant_share(s4: pl.DataFrame) -> float:
    """T-S4-03: share of merchant-days with max p_group >= 0.95."""
    return _float(s4_merchant_days(s4).select((pl.col("max_p") >= DOMINANT).mean()).item())


def t_s4_04_multi_group_share(s4: pl.DataFrame) -> float:
    """T-S4-04: share of merchant-days with >= 2 groups having p_group >= 0.05."""
    return _float(s4_merchant_days(s4).select((pl.col("n_ge_005") >= 2).mean()).item())


def t_s4_05_entropy_median(s4: pl.DataFrame) -> float:
    """T-S4-05: median over merchant-days of the entropy -sum p ln p (p > 0, natural log)."""
    return _float(s4_merchant_days(s4).select(pl.col("entropy").median()).item())


def t_s4_06_mass_error(s4: pl.DataFrame) -> float:
    """T-S4-06: max over merchant-days of |sum p_group - 1|."""
    return _float(s4_merchant_days(s4).select(pl.col("mass_error").max()).item())


def t_s4_07_point_mass(s4: pl.DataFrame) -> dict:
    """T-S4-07: among merchant-days with >= 2 groups, the share covered by the most frequent max
    p_group value rounded to 6 decimals (<= 1%); and the share of those merchant-days whose group
    rank order agrees with mass_raw's (no reversed pair, see `s4_merchant_days`; must be 1)."""
    multi = s4_merchant_days(s4).filter(pl.col("n") >= 2)
    if multi.height == 0:
        return {"s4_point_mass_share": 0.0, "s4_rank_agreement": 1.0}
    top = multi.select(pl.col("max_p").round(POINT_MASS_DECIMALS).value_counts(sort=True).struct.field("count").first()).item()
    return {"s4_point_mass_share": top / multi.height, "s4_rank_agreement": _float(multi["rank_ok"].mean())}


def s4_metrics(s4: pl.DataFrame) -> dict:
    """Every S4 gate metric, keyed as in certification_gates_v1 (merchant-days aggregated once)."""
    md = s4_merchant_days(s4)
    return {"s4_max_p_median": t_s4_01_max_p_median(md), "s4_max_p_p75": t_s4_02_max_p_p75(md),
            "s4_share_max_p_ge_095": t_s4_03_dominant_share(md), "s4_share_two_groups_ge_005": t_s4_04_multi_group_share(md),
            "s4_entropy_median": t_s4_05_entropy_median(md), "s4_mass_error_max": t_s4_06_mass_error(md),
            **t_s4_07_point_mass(md)}


def s4_ideal_merchant_days(s4: pl.DataFrame) -> pl.DataFrame:
    """The ideal mix of the floor attribution: every merchant-day with n >= 2 groups uniform over its
    groups (max p = 1/n, entropy ln n), single-group days unchanged (max p = 1, entropy 0)."""
    n = pl.col("n")
    return s4_merchant_days(s4).select(
        _MD + ["n"]).with_columns(
        max_p=1.0 / n, entropy=n.cast(pl.Float64).log(),
        n_ge_005=pl.when(1.0 / n >= GROUP_SHARE_FLOOR).then(n).otherwise(0),
        mass_error=pl.lit(0.0), rank_ok=pl.lit(True))


def s4_floor_metrics(s4: pl.DataFrame) -> dict:
    """Floor attribution: T-S4-01..05 under the ideal mix (a gate failing even there is capped by
    the upstream topology, not by 2B)."""
    ideal = s4_ideal_merchant_days(s4)
    return {"s4_max_p_median": t_s4_01_max_p_median(ideal), "s4_max_p_p75": t_s4_02_max_p_p75(ideal),
            "s4_share_max_p_ge_095": t_s4_03_dominant_share(ideal),
            "s4_share_two_groups_ge_005": t_s4_04_multi_group_share(ideal),
            "s4_entropy_median": t_s4_05_entropy_median(ideal)}


def s4_group_count_shares(s4: pl.DataFrame) -> dict:
    """Shares of merchant-days with 1, 2 and 3+ tz groups (the topology behind the floor)."""
    n = pl.col("n")
    one, two, more = s4_merchant_days(s4).select((n == 1).mean().alias("one"), (n == 2).mean().alias("two"),
                                                 (n >= 3).mean().alias("more")).row(0)
    return {"1": _float(one), "2": _float(two), "3+": _float(more)}


# --- S4 against the data: raw mix, data reference, anti-artifact veto gates ---

_SITE_PK = ["merchant_id", "legal_country_iso", "site_order"]
_CELL = ["merchant_id", "utc_day", "tz_group_id"]
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


# --- Realism breadth: merchant size, day-effect memory, holidays, local time ---

SERIES = "_series"  # a metric's key for the lists its plot draws (scoring moves them to plot data)
NIGHT_HOURS = (0, 6)  # local 00:00-05:59
FAR_HOURS = 6  # a site whose clock is at least this many hours from the merchant's main group


def merchant_concentration(roster: pl.DataFrame) -> dict:
    """T-R-01: arrivals per merchant: Gini, top 1% and 10% shares, Hill tail exponent (top 10%)
    (the formulas are engine.roster's, which the roster card reports too)."""
    import numpy as np

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


def _local_holiday(frame: pl.DataFrame, day_col: str, tz_col: str, country_col: str) -> "np.ndarray":
    """Whether each row's country has a public holiday on the local date at 12:00 UTC of its UTC day."""
    import numpy as np

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
    import numpy as np

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
    import numpy as np

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
