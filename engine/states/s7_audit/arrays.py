"""Vectorised set and lookup helpers for the audit.

The audit's budget is about a second for a million arrivals, so every helper avoids per-row
Python and picks the cheaper of sorting, binary search and hash join for the data it meets.
"""

from __future__ import annotations

import numpy as np
import polars as pl

# Below this many probes a binary search beats building a hash table, and a sorted column is
# not worth scanning for runs.
_SMALL = 4096


def index_in(universe: np.ndarray, values: np.ndarray, scattered: bool = False) -> np.ndarray:
    """Index of each value in a sorted unique universe, -1 where absent.

    A binary search is fast while consecutive probes land near each other; probes scattered over
    the universe (a roster in time order, hashed ids) miss the cache on every step, and a hash
    join is then several times faster."""
    if scattered and len(values) > _SMALL:
        table = pl.DataFrame({"v": universe, "i": np.arange(len(universe), dtype=np.int64)})
        probe = pl.DataFrame({"v": values})
        return probe.join(table, on="v", how="left", maintain_order="left")["i"].fill_null(-1).to_numpy()
    if len(universe) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    idx = np.searchsorted(universe, values)
    hit = universe[np.minimum(idx, len(universe) - 1)] == values
    return np.where(hit, idx, -1).astype(np.int64)


def index_in_runs(universe: np.ndarray, values: np.ndarray) -> np.ndarray:
    """index_in, but when values come in sorted runs (logs in merchant order) only each run is searched."""
    if len(values) > 1 and bool((values[1:] >= values[:-1]).all()):
        starts = np.r_[0, np.flatnonzero(values[1:] != values[:-1]) + 1]
        counts = np.diff(np.r_[starts, len(values)])
        return np.repeat(index_in(universe, values[starts]), counts)
    return index_in(universe, values, scattered=True)


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values. numpy 2's np.unique hashes integer keys, which is many times slower
    than sorting them on the key sizes met here."""
    if len(a) < 2:
        return a
    step = a[1:] >= a[:-1]
    # Columns of tables in key order are already sorted: then only the runs need collapsing.
    s = a if bool(step.all()) else np.sort(a)
    return s[np.r_[True, s[1:] != s[:-1]]]


def unique_counts(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and how often each occurs."""
    s = np.sort(a)
    if not len(s):
        return s, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return s[starts], np.diff(np.r_[starts, len(s)])


def only_in(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distinct values of a that b lacks."""
    a, b = sorted_unique(a), sorted_unique(b)
    return a[index_in(b, a) < 0]


def ordinal_in_runs(grouped_ids: np.ndarray) -> np.ndarray:
    """0-based ordinal of each row inside its run of equal ids (ids already grouped)."""
    n = len(grouped_ids)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    starts = np.r_[0, np.flatnonzero(grouped_ids[1:] != grouped_ids[:-1]) + 1]
    counts = np.diff(np.r_[starts, n])
    return (np.arange(n) - np.repeat(starts, counts)).astype(np.uint64)


def take(values: np.ndarray, rows: np.ndarray, fill=0) -> np.ndarray:
    """values[rows] where rows >= 0; a row of -1 (no match, which the caller masks) reads values[0],
    or fill when values is empty, as it can be in a shard (events of merchants without sites)."""
    if len(values) == 0:
        return np.full(len(rows), fill, dtype=values.dtype)
    return values[np.maximum(rows, 0)]


