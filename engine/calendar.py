"""The S3 day grid, read in one place: `day_effect_policy_v1`'s inclusive `day_range`, or its default.

The roster and S3 both need the grid; reading it twice once let a policy without `day_range` pass
S3 (which had a default) and crash the roster (which had none), with an error naming the wrong
policy. Both call `day_range` now.
"""

from __future__ import annotations

import datetime as dt
import re

from .errors import EngineError

POLICY = "day_effect_policy_v1"
DEFAULT_DAY_RANGE = ("2026-01-01", "2026-03-31")
_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def day_range(policy_data: dict) -> tuple[str, str]:
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
        raise EngineError(POLICY, "/day_range", f"empty or reversed range {r['start']}..{r['end']} (inclusive end must be >= start)")
    return r["start"], r["end"]


def grid_days(policy_data: dict) -> int:
    """Number of days of the grid (inclusive)."""
    start, end = day_range(policy_data)
    return (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days + 1
