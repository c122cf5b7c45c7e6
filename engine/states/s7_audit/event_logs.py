"""Setting an RNG event log against the roster arrivals it must cover, and the laws every event's
counters and days follow. Used by the routing checks (S5, S6)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from .arrays import index_in
from .registry import EXAMPLES, examples

COUNTER_COLS = ["rng_counter_before_hi", "rng_counter_before_lo", "rng_counter_after_hi",
                "rng_counter_after_lo", "draws", "blocks"]


@dataclass(frozen=True)
class Match:
    """An event log set against the arrivals it must cover, both as event keys."""

    pos: np.ndarray  # per event: row of the expected arrival it covers, -1 when it covers none
    aligned: bool  # the log lines up with the expectation row by row (the fast, normal case)
    missing: int
    extra: int
    duplicated: int
    missing_examples: list
    extra_examples: list
    duplicated_examples: list

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.duplicated)

    def detail(self, what: str, n_expected: int, n_events: int) -> str:
        parts = [f"{n_events} {what} events for {n_expected} expected"]
        if self.missing:
            parts.append(f"{self.missing} expected without an event{examples(self.missing_examples)}")
        if self.extra:
            parts.append(f"{self.extra} events matching no expected arrival{examples(self.extra_examples)}")
        if self.duplicated:
            parts.append(f"{self.duplicated} keys with more than one event{examples(self.duplicated_examples)}")
        return "; ".join(parts)


def match_events(event_keys: np.ndarray, expected_keys: np.ndarray, name_events, name_expected) -> Match:
    """Match event keys to the strictly increasing expected keys; name_* turn rows into readable examples."""
    if len(event_keys) == len(expected_keys) and np.array_equal(event_keys, expected_keys):
        return Match(np.arange(len(event_keys)), True, 0, 0, 0, [], [], [])
    # The log does not line up: find out exactly what differs (only a corrupt log gets here).
    pos = np.where(event_keys >= 0, index_in(expected_keys, event_keys), -1)
    counts = np.bincount(pos[pos >= 0], minlength=len(expected_keys))
    missing, dup = np.flatnonzero(counts == 0), np.flatnonzero(counts > 1)
    extra = np.flatnonzero(pos < 0)
    return Match(pos, False, len(missing), len(extra), len(dup),
                 name_expected(missing[:EXAMPLES]), name_events(extra[:EXAMPLES]), name_expected(dup[:EXAMPLES]))


def same_days(roster_merchant: np.ndarray, roster_day: np.ndarray, event_merchant: np.ndarray,
              event_day: np.ndarray) -> bool:
    """Whether events in (merchant, ordinal) order carry exactly the days of the roster's arrivals.

    Holds for a roster in time order, where each merchant's days never decrease with the ordinal:
    two non-decreasing sequences with the same values counted alike are the same sequence, so it
    is enough that event days never decrease within a merchant and that every (merchant, day) is
    counted alike in both. No arrival has to be moved to compare them.
    """
    if len(event_day) != len(roster_day) or (event_day < 0).any() or (roster_day < 0).any():
        return False
    if len(event_day) == 0:
        return True
    if ((event_merchant[1:] == event_merchant[:-1]) & (event_day[1:] < event_day[:-1])).any():
        return False
    lo = min(int(roster_day.min()), int(event_day.min()))
    span = max(int(roster_day.max()), int(event_day.max())) - lo + 1
    n_merchants = int(max(roster_merchant.max(), event_merchant.max())) + 1
    if span * n_merchants > 1 << 26:  # a count table too large to be worth it: let the caller compare rows
        return False
    size = span * n_merchants
    return np.array_equal(np.bincount(roster_merchant * span + (roster_day - lo), minlength=size),
                          np.bincount(event_merchant * span + (event_day - lo), minlength=size))


def roster_day_faults(roster: pl.DataFrame) -> int:
    """Rows whose utc_day is not the date of utc_timestamp, for a roster already in timestamp order.

    With timestamps sorted, a run of equal utc_day values whose first and last timestamps both
    start with that day has every timestamp in between starting with it too (strings between two
    strings that share a prefix share it), so only the run ends need reading. Any doubt falls back
    to comparing every row.
    """
    day, ts = roster["utc_day"], roster["utc_timestamp"]
    if roster.height == 0:
        return 0
    if day.is_sorted():
        starts = np.flatnonzero((day != day.shift(1)).fill_null(True).to_numpy())
        ends = np.r_[starts[1:] - 1, roster.height - 1]
        run_day = day.gather(starts)
        ok = (ts.gather(starts).str.starts_with(run_day) & ts.gather(ends).str.starts_with(run_day)
              & (run_day.str.len_bytes() == 10))
        if ok.all():
            return 0
    return every_roster_day_fault(roster)


def every_roster_day_fault(roster: pl.DataFrame) -> int:
    """roster_day_faults row by row, for a roster not in timestamp order."""
    return int((roster["utc_day"] != roster["utc_timestamp"].str.slice(0, 10)).sum())


def counter_faults(events: pl.DataFrame, ordinal_col: str, lo_before_of, n_steps: int = 1) -> np.ndarray:
    """Rows whose counters break the law: hi = merchant_id, lo before as given, after = before + 1."""
    m = events["merchant_id"].to_numpy()
    ordinal = events[ordinal_col].to_numpy()
    c = {name: events[name].to_numpy() for name in COUNTER_COLS}
    with np.errstate(over="ignore"):
        lo = lo_before_of(ordinal)
        return ((c["rng_counter_before_hi"] != m) | (c["rng_counter_after_hi"] != m)
                | (c["rng_counter_before_lo"] != lo) | (c["rng_counter_after_lo"] != lo + np.uint64(n_steps))
                | (c["draws"] != 1) | (c["blocks"] != 1))


def duplicate_counters(logs: list[pl.DataFrame]) -> int:
    """Events whose before counter another event of these logs also has."""
    both = pl.concat([f.select("rng_counter_before_hi", "rng_counter_before_lo") for f in logs])
    return int(both.select(pl.struct(pl.all()).is_duplicated().sum()).item())
