"""Composite keys packed into one int64, so that joins of millions of rows become sorted-array
lookups instead of multi-column joins.

Merchants and tz groups are numbered by their position in the shard's code book (sorted merchant
ids, sorted tzids), so the packed keys sort exactly as the (merchant_id, ..., tzid) tuples do.
-1 stands for a row whose key cannot be formed (an unknown merchant or tz, a malformed day).
"""

from __future__ import annotations

import numpy as np

# A day key is (merchant, epoch day, tz group): merchant << 32 | day << 16 | tz.
TZ_BITS = 16  # room for 65,535 tz groups (there are fewer than 600 IANA zones)
DAY_BITS = 16  # epoch days up to 2149
_TZ_MASK = (1 << TZ_BITS) - 1
_DAY_MASK = (1 << DAY_BITS) - 1
_MERCHANT_SHIFT = TZ_BITS + DAY_BITS

# An event key is (merchant, ordinal of its arrival): merchant << 40 | ordinal.
SEQ_BITS = 40  # room for 2^40 arrivals per merchant
_SEQ_MASK = (1 << SEQ_BITS) - 1


def pack_day_keys(merchant: np.ndarray, day: np.ndarray, tz: np.ndarray) -> np.ndarray:
    """Day keys of parts known to be valid."""
    return (merchant << _MERCHANT_SHIFT) | (day << TZ_BITS) | tz


def day_keys(merchant: np.ndarray, day: np.ndarray, tz: np.ndarray) -> np.ndarray:
    """Day keys, -1 where a part is unknown (-1) or the day does not fit its field."""
    ok = (merchant >= 0) & (day >= 0) & (day < (1 << DAY_BITS)) & (tz >= 0)
    return np.where(ok, pack_day_keys(merchant, day, tz), -1)


def group_keys(merchant: np.ndarray, tz: np.ndarray) -> np.ndarray:
    """(merchant, tz group) as merchant << 16 | tz: the day key without its day."""
    return (merchant << TZ_BITS) | tz


def group_of(day_key: np.ndarray) -> np.ndarray:
    return (day_key >> _MERCHANT_SHIFT << TZ_BITS) | (day_key & _TZ_MASK)


def merchant_day_of(day_key: np.ndarray) -> np.ndarray:
    """(merchant, day) as merchant << 16 | day; shifted left by 16 it is a day key with tz 0."""
    return day_key >> TZ_BITS


def day_of(day_key):
    return (day_key >> TZ_BITS) & _DAY_MASK


def merchant_of(day_key):
    return day_key >> _MERCHANT_SHIFT


def tz_of(key):
    """The tz group of a day key or a group key."""
    return key & _TZ_MASK


def merchant_of_group(group_key):
    return group_key >> TZ_BITS


def event_keys(merchant: np.ndarray, ordinal: np.ndarray) -> np.ndarray:
    ok = (merchant >= 0) & (ordinal < (1 << SEQ_BITS))
    return np.where(ok, (merchant << SEQ_BITS) | (ordinal & _SEQ_MASK).astype(np.int64), -1)


def event_keys_from_counts(counts: np.ndarray) -> np.ndarray:
    """Sorted event keys of ordinals 0..counts[m] - 1 of every merchant m: what a log must cover."""
    m = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    first = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    return (m << SEQ_BITS) | (np.arange(len(m), dtype=np.int64) - first[m])


def event_key_parts(key: int) -> tuple[int, int]:
    """(merchant, ordinal) of one event key."""
    return key >> SEQ_BITS, key & _SEQ_MASK
