"""Time of day: the intraday law on the UTC quarter-hour grid, unique instants, RFC 3339 text."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from ..calendar import day_string
from .layout import _GROUP_SHIFT, CDF_BITS, DAY_SHIFT, DAY_US, QUARTER_S, QUARTERS, ROW_SHIFT


def quarter_activity(offsets: np.ndarray, intraday: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The intraday law on the UTC quarter-hour grid: each row the share of a UTC day's activity
    falling in each of its 96 quarters, for one (profile, offset pattern); a quarter weighs what the
    profile gives the LOCAL hour it falls in. Distinct offset patterns (a constant offset, or a DST
    day's mixed quarters) are few, so the table stays small however many tzids and days there are.
    Returns (shares (profiles x patterns, 96), pattern index of each (tz, day), number of patterns);
    row = profile x patterns + pattern. The roster draws times from it and S5 reads it back to
    route each arrival to a zone that is awake at its instant."""
    n_tz, n_days, _ = offsets.shape
    patterns, pattern_of = _offset_patterns(offsets.reshape(n_tz * n_days, QUARTERS))
    quarter_start = np.arange(QUARTERS, dtype=np.int64) * QUARTER_S
    local_hour = ((quarter_start[None, :] + patterns) // 3600) % 24  # (patterns, 96)
    weights = intraday[:, local_hour].reshape(-1, QUARTERS)  # (profiles x patterns, 96)
    total = weights.sum(axis=1, keepdims=True)
    # A DST day that skips the only weighted local hour would leave a row empty: fall back to flat.
    weights = np.where(total > 0, weights, 1.0)
    return weights / weights.sum(axis=1, keepdims=True), pattern_of.reshape(n_tz, n_days).astype(np.int64), patterns.shape[0]


def _quarter_cdf_table(offsets: np.ndarray, intraday: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer CDF rows over the 96 UTC quarter hours of `quarter_activity`: the flat key table
    (row << ROW_SHIFT | cdf), the pattern index of each (tz, day) and the number of patterns."""
    shares, pattern_of, n_patterns = quarter_activity(offsets, intraday)
    cdf = np.cumsum(shares, axis=1)
    cdf_int = np.rint(cdf * float(1 << CDF_BITS)).astype(np.uint64)
    cdf_int[:, -1] = np.uint64(1 << CDF_BITS)
    rows = np.arange(cdf_int.shape[0], dtype=np.uint64)[:, None]
    keys = (rows << np.uint64(ROW_SHIFT)) | cdf_int
    return keys.reshape(-1), pattern_of, n_patterns


def _offset_patterns(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a (tz x day, 96) offset array and the index of each row's pattern.

    Nearly every row is one constant offset: those are told apart by that single number (a 1-D
    unique). Only DST days vary inside the day; they are few (at most a couple per tzid and
    year), so a dict over their bytes is cheap. np.unique(axis=0) would sort whole rows instead.
    """
    constant = (rows == rows[:, :1]).all(axis=1)
    values, inverse = np.unique(rows[constant, 0], return_inverse=True)
    pattern_of = np.empty(rows.shape[0], dtype=np.int64)
    pattern_of[constant] = inverse
    patterns = [np.repeat(values[:, None], rows.shape[1], axis=1)]
    seen: dict[bytes, int] = {}
    for r in np.flatnonzero(~constant):
        key = rows[r].tobytes()
        if key not in seen:
            seen[key] = values.size + len(seen)
            patterns.append(rows[r][None, :])
        pattern_of[r] = seen[key]
    return np.concatenate(patterns), pattern_of


def _groups_and_ranks(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For contiguous groups of the given sizes: group index of each element and its rank in the group."""
    total = int(counts.sum())
    group = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    rank = np.arange(total, dtype=np.int64) - starts[group]
    return group, rank


def _unique_times(tod: np.ndarray, group: np.ndarray, rank: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, int]:
    """Times of day sorted inside each group and made strictly increasing, all inside the day.

    `group` is non-decreasing (contiguous groups of sizes `counts`), `rank` the position inside the
    group. After sorting, the k-th of n times is capped at DAY_US - n + k (room for the arrivals
    after it), then collisions are bumped one microsecond at a time: t'_k = k + max_{i<=k}(t_i - i),
    a running maximum made segmented by putting the group in the key's high bits.
    Returns the new times (group-major, time-minor order) and how many differ from the drawn ones.
    """
    g = group.astype(np.uint64)
    # one u64 key (group << 37 | tod; tod < 2^37) sorts by group, then time; groups stay contiguous
    order = np.argsort((g << np.uint64(37)) | tod.astype(np.uint64), kind="stable")
    drawn = tod[order]
    capped = np.minimum(drawn, DAY_US - counts[group] + rank)
    # + 2^20 keeps capped - rank >= 0 (rank < 2^20); the group bits keep groups apart in the maximum
    key = (g << np.uint64(_GROUP_SHIFT)) + (capped - rank + (1 << DAY_SHIFT)).astype(np.uint64)
    low = np.maximum.accumulate(key) & np.uint64((1 << _GROUP_SHIFT) - 1)
    out = low.astype(np.int64) - (1 << DAY_SHIFT) + rank
    return out, int((out != drawn).sum())


def _format_timestamps(ts_us: np.ndarray, epoch_days: np.ndarray) -> pl.Series:
    """RFC 3339 strings 'YYYY-MM-DDTHH:MM:SS.ffffffZ' of microsecond instants inside the given days.

    Written as a byte matrix (one row of 27 ASCII bytes per instant; the date part from a per-day
    table) and handed to Arrow without a copy. Same text as polars' strftime (tested), at about
    half its cost, which matters on a million rows.
    """
    first = int(epoch_days[0])
    prefix = np.frombuffer("".join(day_string(int(d)) + "T" for d in epoch_days).encode("ascii"),
                           dtype=np.uint8).reshape(-1, 11)
    day = ts_us // DAY_US
    tod = ts_us - day * DAY_US
    sec = tod // 1_000_000
    frac = tod - sec * 1_000_000
    cols = np.empty((27, ts_us.size), dtype=np.uint8)  # column-major: each write is contiguous
    cols[:11] = prefix[day - first].T
    for at, value in ((11, sec // 3600), (14, sec // 60 % 60), (17, sec % 60)):
        cols[at] = 48 + value // 10  # ASCII '0' is 48
        cols[at + 1] = 48 + value % 10
    cols[13] = cols[16] = ord(":")
    cols[19] = ord(".")
    for at in range(25, 19, -1):
        frac, digit = np.divmod(frac, 10)
        cols[at] = 48 + digit
    cols[26] = ord("Z")
    data = np.ascontiguousarray(cols.T).reshape(-1)
    offsets = np.arange(0, 27 * (ts_us.size + 1), 27, dtype=np.int32)
    arrow = pa.Array.from_buffers(pa.string(), ts_us.size, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return pl.Series("utc_timestamp", arrow)
