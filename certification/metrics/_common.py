"""What every metric module shares: conventions (docs/certification.md: midpoint median, linear
quantiles, ddof = 1) and the key column lists."""

from __future__ import annotations

import polars as pl

_BY_MERCHANT = "merchant_id"
_MD = ["merchant_id", "utc_day"]
_SITE_PK = ["merchant_id", "legal_country_iso", "site_order"]
_CELL = ["merchant_id", "utc_day", "tz_group_id"]


def _float(value) -> float:
    return float("nan") if value is None else float(value)


def _q(expr: pl.Expr, q: float) -> pl.Expr:
    return expr.quantile(q, interpolation="linear")
