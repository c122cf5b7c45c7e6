"""The series behind the evidence plots, extracted once per seed from the published S1/S3/S4 frames.

`plot_series(s1, s3, s4)` returns the `plot_data` of a `SeedScore`; `certification/report.py`
draws the PNGs from it. The shape (plain lists and dicts, so it can be pickled or dumped to JSON):

    {
      "s1_hhi":            [float, ...]   # per merchant (all merchants): HHI = sum p_weight^2
      "s1_top1":           [float, ...]   # per merchant with >= 2 sites: largest p_weight
      "s1_top2":           [float, ...]   # same merchants, same order: second largest p_weight
      "s3_merchant_std":   [float, ...]   # per merchant with >= 2 S3 rows: std(gamma), ddof = 1
      "s3_gamma_by_group": {tzid: [float, ...]}  # the 6 tz groups with the most S3 rows;
                                          # at most 5,000 gammas each: every k-th row
      "s4_max_p":          [float, ...]   # per merchant-day: max p_group
      "s4_entropy":        [float, ...]   # per merchant-day (same order): -sum p ln p over p > 0
      "s4_groups_per_day": {"1": share, "2": share, "3+": share}  # merchant-days by tz-group count
    }

Per-merchant lists are in merchant_id order and per-merchant-day lists in (merchant_id, utc_day)
order, so the same datasets always give the same series (polars' group_by order is not stable).
The recipes mirror docs/certification.md (T-S1-02/03, T-S3-01, T-S4-01/05 and the floor shares); they
are written out here rather than imported from `metrics.py` so that `metrics.py` can re-export
`plot_series` without an import cycle.
"""

from __future__ import annotations

import math

import polars as pl

TOP_TZ_GROUPS = 6  # S3 box plot: this many tz groups, the largest by rows
MAX_GAMMA_SAMPLE = 5_000  # per tz group; keeps the pack's plotting memory and time small
GROUP_COUNT_BUCKETS = ("1", "2", "3+")

_MERCHANT = "merchant_id"
_MERCHANT_DAY = ["merchant_id", "utc_day"]


def _floats(series: pl.Series) -> list[float]:
    # "+ 0.0" turns the -0.0 of a single-group day's entropy into 0.0 (same value, tidier JSON).
    return [float(v) + 0.0 for v in series.drop_nulls().to_list()]


def s1_series(s1: pl.DataFrame) -> dict:
    p = pl.col("p_weight")
    per_merchant = s1.group_by(_MERCHANT).agg(
        pl.len().alias("n"),
        (p * p).sum().alias("hhi"),
        p.max().alias("top1"),
        p.sort(descending=True).get(1, null_on_oob=True).alias("top2"),
    ).sort(_MERCHANT)
    # top1 vs top2 only means something with a second site (T-S1-02 uses the same population).
    multi = per_merchant.filter(pl.col("n") >= 2)
    return {"s1_hhi": _floats(per_merchant["hhi"]),
            "s1_top1": _floats(multi["top1"]),
            "s1_top2": _floats(multi["top2"])}


def _every_kth(gammas: pl.DataFrame, cap: int) -> list[float]:
    """A deterministic, evenly spread sample: every k-th row in key order, k = ceil(rows / cap)."""
    k = max(1, math.ceil(gammas.height / cap))
    return _floats(gammas.sort(_MERCHANT_DAY)["gamma"].gather_every(k))


def s3_series(s3: pl.DataFrame, top_groups: int = TOP_TZ_GROUPS, cap: int = MAX_GAMMA_SAMPLE) -> dict:
    std = s3.group_by(_MERCHANT).agg(pl.col("gamma").std(ddof=1).alias("std")).sort(_MERCHANT)
    # Largest groups first; ties broken by tzid so the choice never depends on hash order.
    sizes = s3.group_by("tz_group_id").len().sort(["len", "tz_group_id"], descending=[True, False]).head(top_groups)
    by_group = {}
    for tzid in sizes["tz_group_id"].to_list():
        rows = s3.filter(pl.col("tz_group_id") == tzid).select(*_MERCHANT_DAY, "gamma")
        by_group[tzid] = _every_kth(rows, cap)
    return {"s3_merchant_std": _floats(std["std"]), "s3_gamma_by_group": by_group}


def s4_series(s4: pl.DataFrame) -> dict:
    p = pl.col("p_group")
    days = s4.group_by(_MERCHANT_DAY).agg(
        pl.len().alias("n"),
        p.max().alias("max_p"),
        (-(pl.when(p > 0).then(p * p.log()).otherwise(0.0))).sum().alias("entropy"),
    ).sort(_MERCHANT_DAY)
    n, total = pl.col("n"), days.height
    buckets = [(n == 1).sum().alias("1"), (n == 2).sum().alias("2"), (n >= 3).sum().alias("3+")]
    counts = days.select(buckets).row(0) if total else (0, 0, 0)
    return {"s4_max_p": _floats(days["max_p"]),
            "s4_entropy": _floats(days["entropy"]),
            "s4_groups_per_day": {b: (c / total if total else 0.0) for b, c in zip(GROUP_COUNT_BUCKETS, counts)}}


def plot_series(s1: pl.DataFrame, s3: pl.DataFrame, s4: pl.DataFrame) -> dict:
    """Every plotted series of one seed (shape in the module docstring)."""
    return {**s1_series(s1), **s3_series(s3), **s4_series(s4)}


def veto_series(slopes: pl.DataFrame, ratios: pl.DataFrame) -> dict:
    """The veto gates' per-merchant slopes with their dominance, and the per-group |log ratios|."""
    return {"veto_dominance": slopes["dominance"].to_list(), "veto_slope": slopes["slope"].to_list(),
            "veto_abs_log_ratio": ratios["abs_log_ratio"].to_list()}
