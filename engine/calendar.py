"""The calendar law, in one place: the day grid, time-zone offsets, weekends and public holidays.

* The S3 day grid: `day_effect_policy_v1`'s inclusive `day_range`, or its default. The roster and S3
  both need it; reading it twice once let a policy without `day_range` pass S3 (which had a
  default) and crash the roster (which had none), with an error naming the wrong policy.
* UTC offsets of IANA zones per (day, quarter hour), from zoneinfo (`tz_offsets`).
* Weekends and public holidays per country, from the maintained `holidays` package: one weekend
  convention per country (`weekend_days`), used by the roster's weekday volume and S3's weekly term
  alike, and one holiday table (`holiday_table`) for the roster's volume and S3's mix. A country the
  package does not cover has a Saturday/Sunday weekend and no holidays (`calendar_coverage` says
  which).
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import EngineError

if TYPE_CHECKING:  # both are imported where they are used, when they are used
    import polars as pl
    from holidays import HolidayBase

POLICY = "day_effect_policy_v1"
DEFAULT_DAY_RANGE = ("2026-01-01", "2026-03-31")
_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def day_range(policy_data: dict[str, Any]) -> tuple[str, str]:
    """(start, end) of the inclusive UTC day grid as YYYY-MM-DD, checked: calendar dates, end >= start."""
    r = policy_data.get("day_range")
    if r is None:
        return DEFAULT_DAY_RANGE
    if not isinstance(r, dict) or set(r) != {"start", "end"}:
        raise EngineError(POLICY, "/day_range", "must be an object with exactly 'start' and 'end'")
    days = []
    for key in ("start", "end"):
        value = r[key]
        if not isinstance(value, str) or not _DAY.match(value):
            raise EngineError(POLICY, "/day_range", f"{key} {value!r} is not a YYYY-MM-DD date")
        try:
            days.append(dt.date.fromisoformat(value))
        except ValueError:
            raise EngineError(POLICY, "/day_range", f"{key} {value!r} is not a calendar date") from None
    if days[1] < days[0]:
        raise EngineError(POLICY, "/day_range",
                          f"empty or reversed range {r['start']}..{r['end']} (inclusive end must be >= start)")
    return r["start"], r["end"]


def holiday_effects(policy_data: dict[str, Any]) -> dict[str, float]:
    """Merchant class -> log-effect of a public holiday ("default" for the rest), from
    day_effect_policy_v1: S3 applies it to the mix, the roster to volume (one table for both)."""
    v2 = policy_data.get("sigma_gamma_policy_v2") or {}
    return dict((v2.get("holidays") or {}).get("log_effect_by_segment") or {})


def grid_days(policy_data: dict[str, Any]) -> int:
    """Number of days of the grid (inclusive)."""
    start, end = day_range(policy_data)
    return (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days + 1


# --------------------------------------------------------------------------- time zones

QUARTER_S = 900
QUARTERS = 96
NOON_QUARTER = QUARTERS // 2
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def epoch_day(day: str) -> int:
    """Days since 1970-01-01 of a YYYY-MM-DD date (trusted input: see `parse_day` for checked input)."""
    return dt.date.fromisoformat(day).toordinal() - EPOCH_ORDINAL


def parse_day(value: object, where: str, field: str) -> int:
    """Epoch day of a YYYY-MM-DD string, or an EngineError naming `where`, `field` and the value."""
    if not isinstance(value, str) or not _DAY.match(value):
        raise EngineError(where, field, f"day {value!r} is not YYYY-MM-DD")
    try:
        return epoch_day(value)
    except ValueError:
        raise EngineError(where, field, f"day {value!r} is not a calendar date") from None


def day_string(epoch: int) -> str:
    return dt.date.fromordinal(int(epoch) + EPOCH_ORDINAL).isoformat()


def day_bounds(day_range: tuple[str, str], where: str) -> tuple[int, int]:
    """Epoch days (start, end) of an inclusive YYYY-MM-DD range, checked."""
    start, end = parse_day(day_range[0], where, "day_range"), parse_day(day_range[1], where, "day_range")
    if end < start:
        raise EngineError(where, "day_range", f"day range ends ({day_range[1]}) before it starts ({day_range[0]})")
    return start, end


def grid_day_strings(policy_data: dict[str, Any]) -> list[str]:
    """The inclusive UTC day grid of day_effect_policy_v1 as YYYY-MM-DD strings (chronological =
    lexicographic)."""
    start, end = day_bounds(day_range(policy_data), POLICY)
    return [day_string(d) for d in range(start, end + 1)]


_SMALL_COLUMN = 4096


def epoch_days(days: pl.Series) -> NDArray[np.int64]:
    """Epoch day of each YYYY-MM-DD string of a polars Series, -1 where it is not exactly that form.
    A column in time order (the roster) holds few long runs: one value per run is parsed."""
    import polars as pl

    if len(days) > _SMALL_COLUMN and days.is_sorted():
        starts = np.flatnonzero((days != days.shift(1)).fill_null(True).to_numpy())
        return np.repeat(epoch_days(days.gather(starts)), np.diff(np.r_[starts, len(days)]))
    parsed = days.str.to_date("%Y-%m-%d", strict=False).cast(pl.Int64)
    parsed = pl.select(pl.when(days.str.len_bytes() == 10).then(parsed)).to_series()
    out: NDArray[np.int64] = parsed.fill_null(-1).to_numpy()
    return out


def checked_epoch_days(days: pl.Series, where: str, field: str = "utc_day") -> NDArray[np.int64]:
    """`epoch_days`, or an EngineError naming the first value that is not a YYYY-MM-DD date."""
    out = epoch_days(days)
    bad = np.flatnonzero(out < 0)
    if bad.size:
        raise EngineError(where, field, f"not a YYYY-MM-DD date: {days[int(bad[0])]!r}")
    return out


@lru_cache(maxsize=8192)
def _zone_offsets(tzid: str, first_day: int, n_days: int) -> NDArray[np.int64]:
    try:
        zone = ZoneInfo(tzid)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise EngineError("site_timezones", f"tzid {tzid!r}", "not an IANA time zone known to zoneinfo") from None

    def offset(sec: int) -> int:
        utc_offset = dt.datetime.fromtimestamp(sec, zone).utcoffset()
        assert utc_offset is not None  # an aware datetime (tz=zone) always has one
        return int(utc_offset.total_seconds())

    s0 = first_day * 86_400
    bounds = [offset(s0 + 86_400 * d) for d in range(n_days + 1)]
    out = np.repeat(np.asarray(bounds[:-1], dtype=np.int64)[:, None], QUARTERS, axis=1)
    for d in range(n_days):
        if bounds[d] != bounds[d + 1]:  # a DST change inside the day: quarter by quarter
            out[d] = [offset(s0 + 86_400 * d + QUARTER_S * q) for q in range(QUARTERS)]
    out.flags.writeable = False
    return out


def tz_offsets(tzids: list[str], first_day: int, n_days: int) -> NDArray[np.int64]:
    """UTC offsets in seconds, shape (tzids, days, 96 quarter hours), days counted from epoch day
    `first_day`. One zoneinfo lookup per (tzid, day boundary); per quarter only on a day whose start
    and end offsets differ (a DST change), so the cost is tzids x days, never rows."""
    if not tzids:
        return np.zeros((0, n_days, QUARTERS), dtype=np.int64)
    return np.stack([_zone_offsets(t, int(first_day), int(n_days)) for t in tzids])


def local_days(offsets_noon: NDArray[np.int64], epoch_days: NDArray[np.int64]) -> NDArray[np.int64]:
    """Epoch day of the LOCAL date at 12:00 UTC of each UTC day (the local date covering most of
    it), from offsets (..., days) in seconds at noon UTC."""
    return epoch_days + (43_200 + offsets_noon) // 86_400


def weekday_of(epoch_days: ArrayLike) -> NDArray[np.integer[Any]]:
    """Monday = 0 .. Sunday = 6 (1970-01-01 was a Thursday)."""
    weekday: NDArray[np.integer[Any]] = (np.asarray(epoch_days) + 3) % 7
    return weekday


# --------------------------------------------------------------------------- weekends and holidays

STANDARD_WEEKEND = frozenset({5, 6})  # Saturday, Sunday


@lru_cache(maxsize=512)
def _country_calendar(iso: str, years: tuple[int, ...]) -> HolidayBase | None:
    import holidays

    try:
        return holidays.country_holidays(iso, years=list(years))
    except NotImplementedError:
        return None


def weekend_days(iso: str) -> frozenset[int]:
    """The country's weekend (Monday = 0), from the holidays package; Saturday/Sunday if uncovered."""
    cal = _country_calendar(iso, (2026,))
    return frozenset(getattr(cal, "weekend", STANDARD_WEEKEND) or STANDARD_WEEKEND) if cal is not None else STANDARD_WEEKEND


def weekday_role_shift(iso: str) -> int:
    """Days to add to a local weekday so that the country's last weekend day plays Sunday's role in
    a Mon..Sun profile written for a Saturday/Sunday weekend (Fri/Sat weekend: +1)."""
    days = sorted(weekend_days(iso))
    last = days[-1] if not (0 in days and 6 in days) else 0  # a weekend wrapping Sunday -> Monday ends Monday
    return (6 - last) % 7


def holiday_table(countries: list[str], first_day: int, n_days: int) -> NDArray[np.bool_]:
    """bool (countries, days + 2): the country's public holiday on local dates first_day - 1 ..
    first_day + n_days (one day of margin each side, since a UTC day's local date may differ)."""
    out = np.zeros((len(countries), n_days + 2), dtype=bool)
    years = tuple(sorted({dt.date.fromordinal(first_day - 1 + EPOCH_ORDINAL).year,
                          dt.date.fromordinal(first_day + n_days + EPOCH_ORDINAL).year}))
    for i, iso in enumerate(countries):
        cal = _country_calendar(iso, years)
        if cal is None:
            continue
        for day in cal:
            k = day.toordinal() - EPOCH_ORDINAL - (first_day - 1)
            if 0 <= k < n_days + 2:
                out[i, k] = True
    return out


def calendar_coverage(countries: list[str]) -> dict[str, Any]:
    """Which countries the holidays package covers (the rest: no holidays, Saturday/Sunday weekend)."""
    from holidays.version import __version__ as holidays_version  # what holidays.__version__ re-exports

    missing = sorted(c for c in set(countries) if _country_calendar(c, (2026,)) is None)
    return {"library": "holidays", "version": holidays_version, "countries": len(set(countries)),
            "without_calendar": missing}
