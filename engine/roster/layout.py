"""The roster's constants: its dataset, policy, counter layout and clock grid."""

from __future__ import annotations

import re

DATASET_ID = "s5_arrival_roster"
POLICY_NAME = "roster_policy_v1"

DAY_SHIFT = 20  # counter_lo = epoch_day << DAY_SHIFT | slot
SLOT_ACTIVE, SLOT_COUNT, SLOT_COUNT_NORMAL, SLOT_ARRIVAL0 = 0, 1, 2, 8
SLOT_ZONE0 = 1 << (DAY_SHIFT - 1)  # arrival j's zone draw: SLOT_ZONE0 + j, above every arrival slot
MAX_ARRIVALS_PER_DAY = SLOT_ZONE0 - SLOT_ARRIVAL0  # arrival and zone slots must stay inside the day's block
MERCHANT_LEVEL_LO = 1 << 63  # no calendar day reaches this region of counter_lo
SLOT_MERCHANT_VOLUME = 0
SLOT_SITE0 = 1  # site k of a merchant (0-based, site_timezones order): its productivity normal at 2^63 + 1 + k

DAY_US = 86_400_000_000
QUARTER_S = 900
QUARTERS = 96
QUARTER_US = QUARTER_S * 1_000_000
CDF_BITS = 32  # quarter-hour CDFs are integers in [0, 2^32]
ROW_SHIFT = 33  # table key = row << 33 | cdf; 2^32 fits below 2^33, so rows never interleave
_GROUP_SHIFT = 38  # segmented running max: key = group << 38 | (tod - k + 2^20); tod < 2^37
MAX_MERCHANT_DAYS = 1 << (64 - _GROUP_SHIFT)
CHANNELS = ("card_present", "card_not_present", "omni")
# Hours, minutes and seconds in range; the date part is checked against utc_day and the day grid.
# ASCII classes, not \d: Unicode digits are not RFC 3339 (and the ASCII class is faster).
_TS_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z$"
_DAY_PATTERN = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
