"""S4 group weights: merchant-days, T-S4-01..07, the topology floor."""

from __future__ import annotations

import polars as pl

from ._common import _MD, _float, _q

# --- S4 group weights ---

_PG = pl.col("p_group")
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
        .with_columns(reversed_=(same_day & (_PG < _PG.shift(1))).fill_null(False))  # noqa: SIM300 (_PG is an expression, not a constant)
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
