"""Rosters from outside (a user's file) and from the builder checked against the contract."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa

from ..calendar import day_bounds, day_string
from ..contracts import conform, get
from ..errors import EngineError, from_os_error
from .layout import _TS_PATTERN, DATASET_ID
from .volume import _cast


def _first(mask: pl.Series) -> int | None:
    return int(mask.arg_max()) if mask.any() else None


def validate_roster(df: pl.DataFrame, merchants: pl.DataFrame, day_range: tuple[str, str], where: str) -> pl.DataFrame:
    """The roster under the exact contract schema, or an EngineError naming `where`, the row and the rule.

    Rules: contract schema; utc_timestamp RFC 3339 with 6 fractional digits and Z; utc_day equal to
    the timestamp's date; rows sorted by (utc_timestamp, merchant_id); no duplicate
    (merchant_id, utc_timestamp); utc_day inside the day grid; merchant known, with the merchants
    table's is_virtual, merchant_class and channel. Row numbers are 0-based positions in the file.
    """
    df = _check_rows(_conformed(df, where), where)
    grid = day_bounds(day_range, where)
    day, mid = df["utc_day"], df["merchant_id"]
    # the date part equals utc_day (checked above), so grid membership also proves a calendar date
    grid_days = [day_string(d) for d in range(grid[0], grid[1] + 1)]
    bad = _first(~day.is_in(grid_days))
    if bad is not None:
        raise EngineError(where, f"row {bad}", f"utc_day {day[bad]!r} outside the day grid {grid_days[0]}..{grid_days[-1]}")

    facts = _cast(merchants, "merchants", merchant_id=pl.UInt64, is_virtual=pl.Boolean, merchant_class=pl.String,
                  channel=pl.String).rename({"is_virtual": "_v", "merchant_class": "_c", "channel": "_ch"})
    joined = df.select("merchant_id", "is_virtual", "merchant_class", "channel").join(
        facts.unique("merchant_id", keep="first"), on="merchant_id", how="left", maintain_order="left")
    bad = _first(joined["_c"].is_null())
    if bad is not None:
        raise EngineError(where, f"row {bad}", f"merchant_id {mid[bad]} not in the merchants table")
    bad = _first(joined.select(
        (pl.col("is_virtual") != pl.col("_v")) | (pl.col("merchant_class") != pl.col("_c")) | (pl.col("channel") != pl.col("_ch"))
    ).to_series())
    if bad is not None:
        row = joined.row(bad, named=True)
        raise EngineError(where, f"row {bad}",
                          f"merchant {row['merchant_id']}: (is_virtual, merchant_class, channel) = "
                          f"({row['is_virtual']}, {row['merchant_class']}, {row['channel']}) differ from the merchants table "
                          f"({row['_v']}, {row['_c']}, {row['_ch']})")
    return df


def _check_rows(df: pl.DataFrame, where: str) -> pl.DataFrame:
    """The rules a roster file shows on its own: timestamp format, utc_day agreement, order, uniqueness."""
    ts, day, mid = df["utc_timestamp"], df["utc_day"], df["merchant_id"]
    bad = _first(~ts.str.contains(_TS_PATTERN))
    if bad is not None:
        raise EngineError(where, f"row {bad}", f"utc_timestamp {ts[bad]!r} is not RFC 3339 UTC with 6 fractional digits and Z")
    bad = _first(~ts.str.starts_with(day))
    if bad is not None:
        raise EngineError(where, f"row {bad}", f"utc_day {day[bad]!r} differs from the date of utc_timestamp {ts[bad]!r}")
    if df.height > 1:
        # fixed-width RFC 3339 strings compare like the instants they name
        t0, t1, m0, m1 = ts[:-1], ts[1:], mid[:-1], mid[1:]
        bad = _first((t0 > t1) | ((t0 == t1) & (m0 > m1)))
        if bad is not None:
            raise EngineError(where, f"row {bad + 1}", f"rows not sorted by {get(DATASET_ID).order}")
        # sorted, so equal (utc_timestamp, merchant_id) pairs are neighbours
        bad = _first((t0 == t1) & (m0 == m1))
        if bad is not None:
            raise EngineError(where, f"row {bad + 1}",
                              f"duplicate (merchant_id, utc_timestamp) ({mid[bad]}, {ts[bad]}): "
                              "arrivals of a merchant must be unique")
    return df


def _contract_schema() -> pl.Schema:
    return pl.from_arrow(get(DATASET_ID).schema.empty_table()).schema


def _conformed(df: pl.DataFrame, where: str) -> pl.DataFrame:
    """`df` under the contract schema (engine.contracts.conform), errors re-addressed to `where`.

    A frame that already has the contract's columns, order and types only needs the null check;
    converting it to Arrow and back would cost a copy of a million rows for nothing.
    """
    if df.schema == _contract_schema():
        for name, n_null in zip(df.columns, df.null_count().row(0)):
            if n_null:
                raise EngineError(where, name, f"{n_null} null value(s); column is non-nullable")
        return df
    try:
        return pl.from_arrow(conform(DATASET_ID, df))
    except EngineError as exc:
        raise EngineError(where, exc.field, exc.rule) from None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:  # e.g. a negative merchant_id cast to u64
        raise EngineError(where, "(schema)", f"column cannot take the contract type: {exc}") from None


def load_user_roster(path, merchants: pl.DataFrame | None = None, day_range: tuple[str, str] | None = None) -> pl.DataFrame:
    """A user-supplied Parquet roster under the contract schema; errors name the file, row and rule.

    With `merchants` and `day_range` the roster is fully validated (validate_roster). Without them
    only what the file alone can show is checked (schema, timestamp format, utc_day agreement,
    order, duplicates); the caller must then run validate_roster before using it.
    """
    path = Path(path)
    if not path.is_file():
        raise EngineError(path, "(file)", "roster file not found" if not path.exists() else "roster is not a regular file")
    try:
        df = pl.read_parquet(path)
    except OSError as exc:
        if exc.errno is None:
            raise EngineError(path, "(file)", f"not a readable Parquet file: {exc}") from None
        raise from_os_error(exc, path) from None
    except Exception as exc:  # polars raises several types for a damaged or foreign file
        raise EngineError(path, "(file)", f"not a readable Parquet file: {exc}") from None
    if df.height == 0:
        # S5..S7 would pass vacuously over no arrivals; an empty roster routes nothing.
        raise EngineError(path, "(rows)", "roster has no arrivals")
    if merchants is None or day_range is None:
        return _check_rows(_conformed(df, str(path)), str(path))
    return validate_roster(df, merchants, day_range, str(path))
